"""The ingest stage's consumer: raw topics in large batches, outputs out, state and offsets checkpointed together.

Sensor readings are nearly all of the input, so this stage reads with aiokafka directly (`getmany` of thousands
of messages) instead of through Faust's per-message stream machinery, and runs `pipeline.flow.Ingest` on each
batch. It keeps its own state: each sensor's alarm state, per raw.iot partition, in a compacted changelog topic
`<app id>-ingest-sensor-state` partitioned like raw.iot, restored when a partition is assigned.

Delivery, per checkpoint (every `commit_interval_s`, or sooner when many rows wait):

1. every message produced since the last checkpoint (located reports, dead letters, unlocated tickets) is
   acknowledged by the broker, and every sensor-minute row is stored in ClickHouse;
2. then the state of every sensor changed since the last checkpoint is written to the changelog (acknowledged);
3. then the consumed offsets are committed.

A crash replays from the last commit. Outputs of the replayed messages are written again with the same stable
ids (nothing is counted twice); when the crash came after step 2, the sensors' states already include the
replayed readings, which are then recognised as not newer than the state and skipped, their outputs having
been delivered in step 1. Located reports go out as soon as their batch is processed, not at the checkpoint, so
checkpointing adds no latency to a case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from pipeline.config import Settings
from pipeline.flow import DeadLetterLimitExceeded, IngestResult, Message
from pipeline.model import Source
from pipeline.records import SinkBatch
from pipeline.sensors import SensorState

log = logging.getLogger("cityops.ingest")

EXIT_DEADLETTER_LIMIT = 3      # the worker's exit status when the dead-letter cap stopped it
EXIT_STAGE_FAILED = 4          # a batch failed (e.g. an output could not be delivered): exit, replay after restart


def state_topic(settings: Settings) -> str:
    return f"{settings.app_id}-ingest-sensor-state"


@dataclass
class _Pending:
    """What was produced and computed since the last checkpoint."""

    sends: list[asyncio.Future[Any]] = field(default_factory=list)
    rows: SinkBatch = field(default_factory=SinkBatch)
    dirty: dict[int, set[str]] = field(default_factory=dict)        # raw.iot partition -> sensor ids
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    since: float | None = None
    messages: int = 0


class IngestService(Service):
    """Consumes the raw topics in the `<app id>-ingest` group; see the module docstring."""

    def __init__(self, components: Any, *, batch: int | None = None, commit_interval_s: float | None = None,
                 max_rows: int = 100_000, on_fatal: Callable[[int, str], None] | None = None) -> None:
        super().__init__()
        self.c = components
        self.settings: Settings = components.settings
        t = self.settings.topics
        self.sources: dict[str, Source | None] = {t.raw_hotline: "hotline", t.raw_patrol: "patrol",
                                                   t.raw_iot: None, t.case_updates: None}
        self.batch = batch or int(os.environ.get("CITYOPS_BATCH", "5000"))
        self.commit_interval_s = (commit_interval_s if commit_interval_s is not None
                                  else float(os.environ.get("CITYOPS_COMMIT_INTERVAL", "0.5")))
        self.max_rows = max_rows
        self.group = f"{self.settings.app_id}-ingest"
        self.state_topic = state_topic(self.settings)
        self.states: dict[int, dict[str, SensorState]] = {}       # raw.iot partition -> sensor -> state
        self.owned: set[TopicPartition] = set()
        self.pending = _Pending()
        self.lock = asyncio.Lock()
        self.checkpoints = 0
        self.restored = 0
        self._on_fatal = on_fatal or fatal
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.settings
        opts = s.aiokafka_options()
        await asyncio.get_running_loop().run_in_executor(None, self._ensure_state_topic)
        self._producer = AIOKafkaProducer(client_id=f"{self.group}-producer", acks="all", linger_ms=5,
                                          max_request_size=4 * 1024 * 1024, **opts)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            client_id=f"{self.group}-consumer", group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.batch, fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024, **opts)
        await self._consumer.start()
        self._consumer.subscribe(list(self.sources), listener=_Listener(self))

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self.lock:
                try:
                    await self._checkpoint()
                except Exception as err:   # the replay after the restart covers what this did not store
                    log.warning("ingest: last checkpoint at shutdown failed: %s", err)
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    @Service.task
    async def _run(self) -> None:
        try:
            while not self.should_stop:
                assert self._consumer is not None
                records = await self._consumer.getmany(timeout_ms=100, max_records=self.batch)
                async with self.lock:
                    if records:
                        await self._process(records)
                    if self._due():
                        await self._checkpoint()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if self.should_stop:        # the consumer was stopped under a waiting fetch: a normal shutdown
                return
            if isinstance(err, DeadLetterLimitExceeded):
                self._on_fatal(EXIT_DEADLETTER_LIMIT, str(err))
            else:
                log.exception("ingest failed")
                self._on_fatal(EXIT_STAGE_FAILED, f"{type(err).__name__}: {err}")

    # -- one batch ------------------------------------------------------------------------------------------

    async def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        from pipeline.worker import refresh

        refresh(self.c)
        iot = self.settings.topics.raw_iot
        ingest = self.c.ingest
        for tp, batch in records.items():
            if tp not in self.owned or not batch:
                continue      # fetched before a rebalance took the partition away: its new owner reads it
            msgs = [Message(topic=tp.topic, partition=tp.partition, offset=r.offset,
                            value=r.value if r.value is not None else b"", key=r.key) for r in batch]
            if tp.topic == iot:
                states = self.states.setdefault(tp.partition, {})
                res = ingest.readings(msgs, states)
                if res.readings:
                    self.pending.dirty.setdefault(tp.partition, set()).update(r.sensor_id for r in res.readings)
                    self.pending.rows.readings.extend(res.readings)
            elif tp.topic == self.settings.topics.case_updates:
                res = ingest.updates(msgs)
            else:
                source = self.sources[tp.topic]
                assert source is not None
                res = ingest.reports(source, msgs)
            await self._publish(res)
            self.c.counters.add(tp.topic, len(msgs))
            self.pending.offsets[tp] = batch[-1].offset + 1
            self.pending.messages += len(msgs)
        if self.pending.since is None and self.pending.messages:
            self.pending.since = time.monotonic()

    async def _publish(self, res: IngestResult) -> None:
        assert self._producer is not None
        t = self.settings.topics
        send = self._producer.send
        futures = self.pending.sends
        for key, value in res.located:
            futures.append(await send(t.located, value=value, key=key.encode()))
        for value in res.unlocated:
            futures.append(await send(t.unlocated, value=value))
        for dead in res.deadletters:
            futures.append(await send(t.deadletter, value=dead.to_json(), key=dead.source_topic.encode()))
        counters = self.c.counters
        counters.deadletters += len(res.deadletters)
        counters.unlocated += len(res.unlocated)
        counters.unknown_sensors |= res.unknown_sensors
        self.c.dlq_limit.record(res.accepted, len(res.deadletters))   # raises when the cap is exceeded

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _due(self) -> bool:
        p = self.pending
        if len(p.rows) >= self.max_rows or len(p.sends) >= self.max_rows:
            return True
        return p.since is not None and time.monotonic() - p.since >= self.commit_interval_s

    async def _checkpoint(self) -> None:
        """Outputs acknowledged and rows stored, then sensor states, then offsets (see the module docstring)."""
        p, self.pending = self.pending, _Pending()
        if not p.offsets and not p.sends:
            return
        assert self._producer is not None and self._consumer is not None
        loop = asyncio.get_running_loop()
        stored = loop.run_in_executor(None, self.c.sink.write, p.rows) if len(p.rows) else None
        await asyncio.gather(*p.sends, *([stored] if stored is not None else []))
        changes = []
        for partition, sids in p.dirty.items():
            states = self.states.get(partition, {})
            for sid in sids:
                st = states.get(sid)
                if st is not None:
                    changes.append(await self._producer.send(self.state_topic, value=orjson.dumps(st.to_dict()),
                                                             key=sid.encode(), partition=partition))
        await asyncio.gather(*changes)
        offsets = {tp: off for tp, off in p.offsets.items() if tp in self.owned}
        if offsets:
            await self._consumer.commit(offsets)
        self.checkpoints += 1

    # -- partitions come and go ------------------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            await self._checkpoint()
            iot = self.settings.topics.raw_iot
            for tp in revoked:
                if tp.topic == iot:
                    self.states.pop(tp.partition, None)
            self.owned -= revoked

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            iot = self.settings.topics.raw_iot
            new = sorted(tp.partition for tp in assigned if tp.topic == iot and tp not in self.owned)
            if new:
                restored = await self._restore(new)
                self.states.update(restored)
                self.restored += sum(len(s) for s in restored.values())
            self.owned = set(assigned)

    async def _restore(self, partitions: list[int]) -> dict[int, dict[str, SensorState]]:
        """The sensor states of `partitions`, read from the changelog from its beginning to its end."""
        out: dict[int, dict[str, SensorState]] = {p: {} for p in partitions}
        consumer = AIOKafkaConsumer(client_id=f"{self.group}-restore", enable_auto_commit=False,
                                    fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
                                    **self.settings.aiokafka_options())
        await consumer.start()
        try:
            tps = [TopicPartition(self.state_topic, p) for p in partitions]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            left = {tp for tp in tps if ends[tp] > 0}
            while left:
                for tp, batch in (await consumer.getmany(*left, timeout_ms=500, max_records=50_000)).items():
                    states = out[tp.partition]
                    for r in batch:
                        if r.offset >= ends[tp]:
                            continue
                        sid = r.key.decode() if r.key else ""
                        if r.value is None:
                            states.pop(sid, None)
                        else:
                            states[sid] = SensorState.from_dict(orjson.loads(r.value))
                for tp in list(left):
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        log.info("ingest: restored %d sensor states of raw.iot partitions %s",
                 sum(len(s) for s in out.values()), partitions)
        return out

    def _ensure_state_topic(self) -> None:
        """Create the compacted changelog, partitioned like raw.iot (whose partition count it looks up)."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from pipeline.topics import ensure_topics

        ensure_topics(self.settings)
        admin = KafkaAdminClient(client_id=f"{self.group}-admin", **self.settings.kafka_client_options())
        try:
            if self.state_topic in set(admin.list_topics()):
                return
            described = admin.describe_topics([self.settings.topics.raw_iot])
            partitions = len(described[0]["partitions"]) if described else self.settings.partitions
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name=self.state_topic, num_partitions=partitions, replication_factor=1,
                                              topic_configs={"cleanup.policy": "compact"})])
            deadline = time.monotonic() + 60
            while self.state_topic not in set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {self.state_topic} not visible after 60 s")
                time.sleep(0.2)
        finally:
            admin.close()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.service.assigned(set(assigned))


def fatal(status: int, reason: str) -> None:
    """Stop the whole process, loudly: a dead consumer in a live-looking process would read nothing. Nothing
    unstored was committed, so the replay after the restart (and a fix) loses nothing."""
    log.critical("stopping the worker: %s", reason)
    print(f"cityops worker: stopping: {reason}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(status)
