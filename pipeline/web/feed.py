"""The background Kafka consumer that keeps a `LiveBoard` current, and the consumer-lag probe.

`BoardFeed` runs kafka-python in a daemon thread (kafka-python blocks; the event loop must not). It assigns
itself every partition, with no consumer group (each web server needs *all* of it, and commits nothing):
- `case-state` from the beginning: the topic is compacted, so that is the latest state of every case;
- `assignments`, `unlocated` and `deadletter` from `lookback` ago (they are not compacted and only the
  recent part matters to a live view).
Each poll's records are handed to the event loop in one `LiveBoard.apply_batch` call. `caught_up` is set once
the consumer reached the end offsets it saw at start (the health endpoint reports it).

`LagProbe` compares the worker's committed offsets (its consumer groups: `Settings.consumer_groups()`) with the
end offsets of the raw topics: events in, events processed and lag per source, for the warnings and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.config import Settings

log = logging.getLogger("cityops.web.feed")

Item = tuple[str, dict[str, Any] | None, float]


def decode_record(kind: str, value: bytes | None) -> dict[str, Any] | None:
    """A record's JSON value; None for a tombstone or a value that is not a JSON object (logged, skipped)."""
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        log.warning("skipping a %s record that is not JSON (%d bytes)", kind, len(value))
        return None
    return obj if isinstance(obj, dict) else None


class BoardFeed:
    """Consumes the live topics in a thread and applies them on the event loop (see the module docstring)."""

    def __init__(self, settings: Settings, deliver: Callable[[list[Item]], None],
                 lookback_s: float = 72 * 3600) -> None:
        t = settings.topics
        self.settings = settings
        self.kinds = {t.case_state: "case-state", t.assignments: "assignment", t.unlocated: "unlocated",
                      t.deadletter: "deadletter"}
        self.deliver = deliver
        self.lookback_s = lookback_s
        self.caught_up = threading.Event()
        self.last_error: str | None = None
        self.records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cityops-web-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception as err:  # the broker went away: report it, wait, reconnect
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("live feed: %s; reconnecting in 2 s", self.last_error)
                self._stop.wait(2.0)

    def _consume(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, client_id="cityops-web-feed",
                                 fetch_max_wait_ms=100, **self.settings.kafka_client_options())
        try:
            parts: list[Any] = []
            for topic in self.kinds:
                ids = _wait_partitions(consumer, topic, self._stop)
                parts += [TopicPartition(topic, p) for p in sorted(ids)]
            consumer.assign(parts)
            since_ms = int((time.time() - self.lookback_s) * 1000)
            recent = [tp for tp in parts if self.kinds[tp.topic] != "case-state"]
            starts = consumer.offsets_for_times({tp: since_ms for tp in recent})
            ends = consumer.end_offsets(parts)
            for tp in parts:
                found = starts.get(tp) if tp in starts else None
                if self.kinds[tp.topic] == "case-state":
                    consumer.seek_to_beginning(tp)
                elif found is None:
                    consumer.seek(tp, ends[tp])
                else:
                    consumer.seek(tp, found.offset)
            target = {tp: off for tp, off in ends.items() if off > 0}
            self.last_error = None
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=200, max_records=5000)
                items: list[Item] = []
                for tp, records in batch.items():
                    kind = self.kinds[tp.topic]
                    items += [(kind, decode_record(kind, r.value), r.timestamp / 1000.0) for r in records]
                if items:
                    self.records += len(items)
                    self.deliver(items)
                if not self.caught_up.is_set():
                    target = {tp: off for tp, off in target.items() if consumer.position(tp) < off}
                    if not target:
                        self.caught_up.set()
        finally:
            consumer.close()


def _wait_partitions(consumer: Any, topic: str, stop: threading.Event, timeout_s: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} does not exist (run `cityops topics create`)")
        consumer.topics()       # refreshes metadata
        stop.wait(0.5)
    return set()


def deliver_to_loop(loop: asyncio.AbstractEventLoop,
                    apply: Callable[[list[Item]], Any]) -> Callable[[list[Item]], None]:
    """A `deliver` for `BoardFeed` that runs `apply(items)` on `loop` (the board's only writer)."""
    def deliver(items: list[Item]) -> None:
        loop.call_soon_threadsafe(apply, items)
    return deliver


@dataclass
class SourceProgress:
    """One raw topic: messages in (end offsets), processed (the worker group's committed offsets), lag."""

    topic: str
    produced: int
    processed: int

    @property
    def lag(self) -> int:
        return max(0, self.produced - self.processed)


@dataclass
class LagReport:
    sources: dict[str, SourceProgress] = field(default_factory=dict)
    deadletters: int = 0          # end offsets of the dead-letter topic: every dead letter ever written
    at: float = 0.0
    error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.sources.values())


class LagProbe:
    """Reads end offsets and the worker group's committed offsets (blocking; run it in a thread)."""

    def __init__(self, settings: Settings) -> None:
        t = settings.topics
        self.settings = settings
        self.sources = {s.name: topic for topic, s in t.sources().items()} | {"located": t.located}
        self._consumer: Any = None
        self._admin: Any = None

    def measure(self) -> LagReport:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                opts = self.settings.kafka_client_options()
                self._consumer = KafkaConsumer(group_id=None, client_id="cityops-web-lag", **opts)
                self._admin = KafkaAdminClient(client_id="cityops-web-lag", **opts)
            committed: dict[Any, Any] = {}
            for group in self.settings.consumer_groups():
                committed.update(_group_offsets(self._admin, group))   # the groups read different topics
            report = LagReport(at=time.time())
            topics = {**self.sources, "deadletter": self.settings.topics.deadletter}
            for name, topic in topics.items():
                parts = self._consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in parts]
                ends = self._consumer.end_offsets(tps) if tps else {}
                produced = sum(ends.values())
                if name == "deadletter":
                    report.deadletters = produced
                    continue
                done = sum(committed[tp].offset for tp in tps if tp in committed and committed[tp].offset >= 0)
                report.sources[name] = SourceProgress(topic, produced, done)
            return report
        except Exception as err:  # broker unreachable: report, retry on the next probe
            self.close()
            return LagReport(at=time.time(), error=f"{type(err).__name__}: {err}")

    def close(self) -> None:
        """Close the clients (they are re-made on the next `measure`)."""
        for client in (self._consumer, self._admin):
            if client is not None:
                # closing a broken client may raise anything; it is gone either way
                with contextlib.suppress(Exception):
                    client.close()
        self._consumer = self._admin = None


def _group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """Committed offsets of a consumer group; kafka-python 3 renamed the call (`list_group_offsets`)."""
    if hasattr(admin, "list_group_offsets"):
        return dict(admin.list_group_offsets({group: None}).get(group, {}))
    return dict(admin.list_consumer_group_offsets(group))
