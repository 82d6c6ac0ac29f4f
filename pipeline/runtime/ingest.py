"""The ingest stage: raw topics in (group `<app id>-ingest`), located reports, dead letters, unlocated tickets and
sensor-minute rows out (see pipeline.runtime.consumer for batches, checkpoints and recovery).

Partitions ahead in event time wait while the others catch up on a backlog (pipeline.runtime.align;
`CITYOPS_ALIGN_SKEW` seconds, default 60, `off` to read them as they come).

State: each sensor's alarm and fault state and current-minute aggregate, per raw.iot partition, in the compacted
changelog `<app id>-ingest-sensor-state`. A replayed reading is not newer than its sensor's state and is skipped
(pipeline.stages.sensors.apply_reading), so a replay after a checkpoint wrote the state changes nothing.

Silent sensors are found by each raw.iot partition's clock as its readings come
(pipeline.stages.ingest.Ingest.readings); with the wall clock (`CITYOPS_SLA_CLOCK=wall`) also every
`CITYOPS_SLA_CHECK_INTERVAL` seconds while no reading comes (`_check_silent_sensors`).

The input topics and how each is taken are the rows of pipeline.model.sources.

Progress marks: after each round of fetching (and processing), when where its input partitions stand changed,
the process sends its marks (pipeline.wire.encode_marks) to every located partition, behind the items they cover,
by the same producer: the cases stage orders each book's input by them (pipeline.stages.order).
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import orjson
from aiokafka import TopicPartition
from mode import Service

from pipeline.runtime.align import Aligner, time_reader
from pipeline.runtime.changelog import ChangelogTable, json_bytes
from pipeline.runtime.components import Components, refresh
from pipeline.runtime.consumer import EXIT_DEADLETTER_LIMIT, BatchService
from pipeline.stages.deadletters import DeadLetterLimitExceeded
from pipeline.stages.ingest import IngestResult
from pipeline.stages.patrolreports import refused
from pipeline.stages.sensors import SILENT_CHECK_S, SensorState
from pipeline.wire import MARKS_KEY, Message, encode_marks


def _encode_state(state: SensorState) -> bytes:
    return json_bytes(state.to_dict())


# A restarted worker decodes every sensor's state before it reads anything (61,000 in the bench's month): typed,
# straight into the dataclass, four times faster than a dict and `from_dict` (0.12 against 0.52 CPU-s for 61,000).
_STATE = msgspec.json.Decoder(SensorState)


def _decode_state(raw: bytes) -> SensorState:
    """A state as `_encode_state` wrote it. Anything else `from_dict` reads as before: a state of an older version
    without `alarm_at` (`from_dict` counts its alarm from the last reading, where a typed decode would say 0), or
    one that does not fit the types (`minute_max` null: no reading this minute)."""
    if b'"alarm_at"' in raw:
        try:
            return _STATE.decode(raw)
        except msgspec.ValidationError:
            pass
    return SensorState.from_dict(orjson.loads(raw))


class IngestService(BatchService):
    def __init__(self, components: Components, **kwargs: Any) -> None:
        super().__init__(components, **kwargs)
        s = self.settings
        self.group = f"{s.app_id}-ingest"
        self.sources = s.topics.sources()       # input topic -> its source (pipeline.model.sources)
        self.topics = list(self.sources)
        self.sensor_states: ChangelogTable[SensorState] = ChangelogTable(
            f"{s.app_id}-ingest-sensor-state", _encode_state, _decode_state)
        self.tables = {topic: self.sensor_states for topic, src in self.sources.items() if src.path == "readings"}
        if s.align_skew_s is not None:
            self.aligner = Aligner({topic: time_reader(src.time_field) for topic, src in self.sources.items()},
                                   skew_s=s.align_skew_s, idle_s=s.align_idle_s, stall_s=s.align_stall_s,
                                   window=components.ingest.decoder.reading_bounds)
        self.readers = {topic: time_reader(src.time_field) for topic, src in self.sources.items()}
        self._through: dict[TopicPartition, float] = {}    # without an aligner: each partition's last record time
        self._next: dict[TopicPartition, int] = {}        # without an aligner: each partition's next offset
        self._marks_sent: list[tuple[str, int, float | None]] | None = None
        self._located_partitions: list[int] = []

    async def process(self, records: dict[TopicPartition, list[Any]]) -> None:
        refresh(self.c)
        t = self.settings.topics
        ingest = self.c.ingest
        located: list[tuple[float, int, str, bytes]] = []
        for tp, batch in records.items():
            # records are pipeline.wire.Message (fastclient.LEAN) or aiokafka ConsumerRecords, with those fields
            if any(r.value is None for r in batch):     # a tombstone on a raw topic: an empty, invalid message
                batch = [Message(r.topic, r.partition, r.offset, r.value or b"", r.key) for r in batch]
            source = self.sources[tp.topic]
            readings = source.path == "readings"
            res = ingest.take(source, batch, self.sensor_states.partition(tp.partition) if readings else None,
                              self.pending.rows.reading_columns)
            if readings and res.touched:
                self.sensor_states.changed(tp.partition, res.touched)
            if source.name == "patrol" and res.deadletters:
                self.pending.rows.patrol_reports.extend(refused(res.deadletters))
            located += [(at, len(located) + i, key, value)
                        for i, (at, (key, value)) in enumerate(zip(res.located_at, res.located, strict=True))]
            await self._publish(res)
            if self.aligner is None:
                self._next[tp] = batch[-1].offset + 1
                for r in reversed(batch[-100:]):
                    at = self.readers[tp.topic](r.value) if r.value else None
                    if at is not None:
                        self._through[tp] = at
                        break
        # The batch's located items go out in the order they happened, not partition by partition: reports of
        # one incident come from several partitions and topics, and a case is found most reliably in time order.
        for _, _, key, value in sorted(located):
            await self.send(t.located, value, key.encode())

    def partitions_lost(self, partitions: set[TopicPartition]) -> None:
        self.c.ingest.forget_watches()
        for tp in partitions:
            self._through.pop(tp, None)
            self._next.pop(tp, None)
        self._marks_sent = None

    def marks(self) -> list[tuple[str, int, float | None]]:
        """Where each owned input partition stands (pipeline.wire.encode_marks); a partition nothing is known of
        yet is left out (the cases stage waits for it)."""
        assert self._consumer is not None
        highwater = self._consumer.highwater
        out: list[tuple[str, int, float | None]] = []
        for tp in sorted(self.owned):
            at: float | None
            if self.aligner is not None:
                at = self.aligner.front(tp, highwater)
                if at is not None and self.sources[tp.topic].path == "readings":
                    # a sensor found silent at the next check boundary of the partition's clock (its last reading
                    # processed) is reported at its last reading + silent: after the last boundary passed
                    last = self.aligner.last.get(tp, float("-inf"))
                    at = min(at, math.floor(last / SILENT_CHECK_S) * SILENT_CHECK_S) if last > -math.inf else last
            else:
                high, nxt = highwater(tp), self._next.get(tp)
                if nxt is None:
                    continue
                at = None if high is not None and nxt >= high else self._through.get(tp, float("-inf"))
                if at is not None and at > -math.inf and self.sources[tp.topic].path == "readings":
                    at = math.floor(at / SILENT_CHECK_S) * SILENT_CHECK_S       # as above
            if at is None or at > float("-inf"):
                out.append((tp.topic, tp.partition, at))
        return out

    async def after_round(self) -> None:
        if self.aligner is None:
            assert self._consumer is not None
            for tp in self.owned - self._next.keys():
                try:
                    self._next[tp] = await self._consumer.position(tp)
                except Exception:       # revoked meanwhile: the next round sees the new assignment
                    break
        marks = self.marks()
        if marks == self._marks_sent:
            return
        if not self._located_partitions:
            assert self._producer is not None
            located = self.settings.topics.located
            self._located_partitions = sorted(await self._producer.partitions_for(located) or ())
            if not self._located_partitions:
                return
        value = encode_marks(marks)
        for partition in self._located_partitions:
            await self.send(self.settings.topics.located, value, MARKS_KEY, partition=partition)
        self._marks_sent = marks
        if self.pending.since is None:
            self.pending.since = time.monotonic()

    @Service.task
    async def _silent_sensor_timer(self) -> None:
        """Every `Settings.sla_check_interval` seconds (CITYOPS_SLA_CHECK_INTERVAL), `_check_silent_sensors`."""
        while not self.should_stop:
            await self.sleep(self.settings.sla_check_interval)
            if not self.should_stop:
                await self._check_silent_sensors()

    async def _check_silent_sensors(self) -> None:
        """With the wall clock, report sensors that fell silent on partitions where no reading came since the
        last batch. With the stream clock (the default) only readings move a partition's clock: a timer would
        judge by the time of the check, which a replay does not repeat."""
        if self.c.ingest.silent_clock != "wall":
            return
        t = self.settings.topics
        async with self.lock:
            results = [(tp.partition, self.c.ingest.silent_sweep(self.sensor_states.partition(tp.partition)))
                       for tp in self.owned if self.sources[tp.topic].path == "readings"]
            sent = False
            for partition, res in results:
                if not res.touched:
                    continue
                self.sensor_states.changed(partition, res.touched)
                await self._publish(res)
                for key, value in res.located:
                    await self.send(t.located, value, key.encode())
                sent = True
            if sent:
                if self.pending.since is None:
                    self.pending.since = time.monotonic()
                await self.tick()

    async def _publish(self, res: IngestResult) -> None:
        t = self.settings.topics
        for value in res.unlocated:
            await self.send(t.unlocated, value)
        for dead in res.deadletters:
            await self.send(t.deadletter, dead.to_json(), dead.source_topic.encode())
        counters = self.c.counters
        counters.deadletters += len(res.deadletters)
        counters.unlocated += len(res.unlocated)
        counters.unknown_sensors |= res.unknown_sensors
        self.c.dlq_limit.record(res.accepted, len(res.deadletters))   # raises when the cap is exceeded

    def failure(self, err: Exception) -> tuple[int, str] | None:
        if isinstance(err, DeadLetterLimitExceeded):
            return EXIT_DEADLETTER_LIMIT, str(err)
        return None
