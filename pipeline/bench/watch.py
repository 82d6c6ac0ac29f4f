"""When a run is done: the end-to-end bench's watch over everything the worker writes (ClickHouse row counts, output
topic end offsets, the group's committed offsets)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings


@dataclass
class Completion:
    """What a watched run did: wall times of its first and last observed output and the final counts."""

    first_at: float | None = None
    last_at: float | None = None
    finished: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    probe_first: Any = None          # `probe()` when the first change was seen, and at the last one
    probe_last: Any = None

    @property
    def seconds(self) -> float:
        if self.first_at is None or self.last_at is None:
            return float("nan")
        return max(1e-3, self.last_at - self.first_at)


class Watcher:
    """Polls a phase's outputs: ClickHouse row counts (every insert raises one) and the end offsets of the
    output topics, and the consumer group's committed offsets on the input topics.

    A run is done when the group committed every input offset (raw topics and the internal located topic) and
    nothing changed for `quiet_s`. The first and last times anything changed bound the run; they are seen
    within `every_s` of happening.
    """

    def __init__(self, settings: Settings, groups: dict[str, list[str]] | None, outputs: Sequence[str],
                 every_s: float = 0.1, quiet_s: float = 3.0) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        from pipeline.sink.transport import ClickHouse

        opts = settings.kafka_client_options()
        self.consumer = KafkaConsumer(group_id=None, client_id="cityops-bench", **opts)
        self.admin = KafkaAdminClient(client_id="cityops-bench", **opts)
        self.db = ClickHouse(settings)
        self.groups, self.outputs = dict(groups or {}), list(outputs)
        self.raw = {t for t in settings.consumer_groups()[f"{settings.app_id}-ingest"]}
        self.every_s, self.quiet_s = every_s, quiet_s

    def close(self) -> None:
        for c in (self.consumer, self.admin, self.db):
            with suppress(Exception):
                c.close()

    def _tps(self, topics: Sequence[str]) -> list[Any]:
        from kafka import TopicPartition

        return [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]

    def snapshot(self, previous: dict[str, int] | None = None) -> dict[str, int]:
        """Row counts and output end offsets; `previous` again while the server is briefly unreachable (a
        shared machine's server may be restarted by someone's outage test; the worker's sink retries too)."""
        try:
            return self._snapshot()
        except Exception:
            if previous is None:
                raise
            return previous

    def _snapshot(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT (SELECT count() FROM events), (SELECT count() FROM cases), "
            "(SELECT count() FROM case_transitions), (SELECT count() FROM sensor_readings)")[0]
        out = dict(zip(("events", "cases", "transitions", "readings"), (int(v) for v in row), strict=True))
        ends = self.consumer.end_offsets(self._tps(self.outputs))
        for tp, end in ends.items():
            out[tp.topic] = out.get(tp.topic, 0) + int(end)
        return out

    def processed(self) -> int:
        """Raw input messages the groups committed (what a cut run did process)."""
        total = 0
        for group in self.groups:
            committed = _group_offsets(self.admin, group)
            total += sum(o.offset for tp, o in committed.items() if tp.topic in self.raw and o.offset >= 0)
        return total

    def lag(self) -> int:
        """Input messages not yet committed by the groups (every message when a group committed nothing)."""
        total = 0
        for group, inputs in self.groups.items():
            ends = self.consumer.end_offsets(self._tps(inputs))
            committed = _group_offsets(self.admin, group)
            total += sum(max(0, end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                                       else 0)) for tp, end in ends.items())
        return total

    def _lag_or_none(self) -> int | None:
        try:
            return self.lag()
        except Exception:
            return None

    def watch(self, timeout_s: float, alive: Callable[[], bool] = lambda: True,
              done: Callable[[dict[str, int]], bool] | None = None,
              probe: Callable[[], Any] = lambda: None) -> Completion:
        """Poll until done (see the class docstring, or `done(counts)` when given), the time is up, or `alive()`
        turns False. `probe()` is sampled at the first and the last change (e.g. the workers' CPU time)."""
        c = Completion()
        last = self.snapshot()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            time.sleep(self.every_s)
            now_counts, now = self.snapshot(last), time.time()
            if now_counts != last:
                if c.first_at is None:
                    c.first_at, c.probe_first = now, probe()
                c.last_at, last, c.probe_last = now, now_counts, probe()
            quiet = c.last_at is not None and now - c.last_at >= self.quiet_s
            if quiet and (done(now_counts) if done is not None else self._lag_or_none() == 0):
                c.finished = True
                break
        c.counts = last
        return c


def _group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """Committed offsets of a consumer group (kafka-python 3 renamed the call to `list_group_offsets`)."""
    if hasattr(admin, "list_group_offsets"):
        return dict(admin.list_group_offsets({group: None}).get(group, {}))
    return dict(admin.list_consumer_group_offsets(group))


def retrying(fn: Callable[[], Any], seconds: float = 60.0) -> Any:
    """`fn()`, tried again every 2 s for `seconds` while it fails (a restarting server), then its error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def distinct_counts(settings: Settings) -> dict[str, int]:
    """Logical rows stored (distinct keys), to check that a run stored everything."""
    return retrying(lambda: _distinct_counts(settings))  # type: ignore[no-any-return]


def _distinct_counts(settings: Settings) -> dict[str, int]:
    from pipeline.sink.transport import ClickHouse

    db = ClickHouse(settings)
    try:
        row = db.execute("SELECT (SELECT uniqExact(event_id) FROM events), (SELECT uniqExact(case_id) FROM cases), "
                         "(SELECT uniqExact(sensor_id, minute) FROM sensor_readings)")[0]
    finally:
        db.close()
    return {"events": int(row[0]), "cases": int(row[1]), "reading_minutes": int(row[2])}
