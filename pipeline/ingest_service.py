"""The ingest stage: raw topics in (group `<app id>-ingest`), located reports, dead letters, unlocated tickets and
sensor-minute rows out (see pipeline.batch_service for batches, checkpoints and recovery).

Partitions ahead in event time wait while the others catch up on a backlog (pipeline.align;
`CITYOPS_ALIGN_SKEW` seconds, default 60, `off` to read them as they come).

State: each sensor's alarm state and current-minute aggregate, per raw.iot partition, in the compacted changelog
`<app id>-ingest-sensor-state`. A replayed reading is not newer than its sensor's state and is skipped
(pipeline.sensors.observe), so a replay after a checkpoint wrote the state changes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from aiokafka import TopicPartition

from pipeline.align import TIME_FIELDS, Aligner, time_reader
from pipeline.batch_service import EXIT_DEADLETTER_LIMIT, BatchService, ChangelogTable, json_bytes
from pipeline.flow import DeadLetterLimitExceeded, IngestResult, Message
from pipeline.model import Source
from pipeline.sensors import SensorState


def _encode_state(state: SensorState) -> bytes:
    return json_bytes(state.to_dict())


def _decode_state(raw: bytes) -> SensorState:
    return SensorState.from_dict(orjson.loads(raw))


class IngestService(BatchService):
    def __init__(self, components: Any, **kwargs: Any) -> None:
        super().__init__(components, **kwargs)
        t = self.settings.topics
        self.group = f"{self.settings.app_id}-ingest"
        self.sources: dict[str, Source] = {t.raw_hotline: "hotline", t.raw_patrol: "patrol"}
        self.topics = [t.raw_hotline, t.raw_patrol, t.raw_iot, t.case_updates]
        self.sensor_states: ChangelogTable[SensorState] = ChangelogTable(
            f"{self.settings.app_id}-ingest-sensor-state", _encode_state, _decode_state)
        self.tables = {t.raw_iot: self.sensor_states}
        skew = os.environ.get("CITYOPS_ALIGN_SKEW", "60")
        if skew not in ("", "0", "off"):
            self.aligner = Aligner({getattr(t, logical): time_reader(name) for logical, name in TIME_FIELDS.items()},
                                   skew_s=float(skew), idle_s=float(os.environ.get("CITYOPS_ALIGN_IDLE", "2")),
                                   stall_s=float(os.environ.get("CITYOPS_ALIGN_STALL", "30")),
                                   window=components.ingest.decoder.reading_bounds)

    async def process(self, records: dict[TopicPartition, list[Any]]) -> None:
        from pipeline.worker import refresh

        refresh(self.c)
        t = self.settings.topics
        ingest = self.c.ingest
        located: list[tuple[float, int, str, bytes]] = []
        for tp, batch in records.items():
            # records are pipeline.flow.Message (batch_service.LEAN) or aiokafka ConsumerRecords, with those fields
            if any(r.value is None for r in batch):     # a tombstone on a raw topic: an empty, invalid message
                batch = [Message(r.topic, r.partition, r.offset, r.value or b"", r.key) for r in batch]
            if tp.topic == t.raw_iot:
                res = ingest.readings(batch, self.sensor_states.partition(tp.partition),
                                      self.pending.rows.reading_columns)
                if res.touched:
                    self.sensor_states.changed(tp.partition, res.touched)
            elif tp.topic == t.case_updates:
                res = ingest.updates(batch)
            else:
                res = ingest.reports(self.sources[tp.topic], batch)
            located += [(at, len(located) + i, key, value)
                        for i, (at, (key, value)) in enumerate(zip(res.located_at, res.located, strict=True))]
            await self._publish(res)
        # The batch's located items go out in the order they happened, not partition by partition: reports of
        # one incident come from several partitions and topics, and a case is found most reliably in time order.
        for _, _, key, value in sorted(located):
            await self.send(t.located, value, key.encode())

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
