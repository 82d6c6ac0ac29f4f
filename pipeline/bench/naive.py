"""The naive pipeline: the obvious way to build cityops, kept as `make bench`'s baseline (issue #9).

It does the worker's job message by message, the way a first version would:

- a kafka-python consumer on the four raw topics, one message at a time;
- the standard library's `json` and hand-written checks per message (no orjson, no light reading tuple);
- one shapely STRtree query per point (`covers`, then the nearest cell within the snap tolerance);
- the dispatch rules walked as the YAML's dicts for every case (`rules.naive.NaiveRuleset`);
- a ClickHouse INSERT of row dicts every `insert_every` rows per table; a Kafka send per assignment.

The decoder and the locator are pipeline.bench.naiveparts; this module is the pipeline that runs them.

Correlation and the case lifecycle use the same `CaseBook` as the worker: they are the domain's rules, not an
implementation choice, and sharing them makes the baseline route exactly like the worker (tests/bench checks
it). Everything a real pipeline must do is done: dead letters go to the dead-letter topic, unlocated tickets to
the unlocated topic, sensor readings are aggregated per minute, and callers' personal data is masked with the
worker's own privacy functions.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.bench.naiveparts import NaiveDecoder, NaiveLocator
from pipeline.config import Topics
from pipeline.model.cases import CorrelationPolicy
from pipeline.model.events import CaseUpdate, Event
from pipeline.model.privacy import mask_text
from pipeline.stages.cases import CaseBook
from pipeline.stages.decode import Reading
from pipeline.stages.fields import InvalidEvent
from pipeline.stages.lifecycle import Outcome
from pipeline.stages.registry import Sensor, SensorRegistry
from pipeline.stages.sensors import (
    ALARM,
    FAULT,
    LATE,
    REALARM,
    RESUMED,
    SensorState,
    SilentWatch,
    alarm_event,
    apply_reading,
    fall_silent,
    fault_event,
)
from pipeline.wire import book_key, case_book_key


class RowWriter(Protocol):
    """Where rows go: `pipeline.sink.transport.ClickHouse.insert_dicts` satisfies it."""

    def insert_dicts(self, table: str, columns: list[str], rows: list[dict[str, Any]]) -> int: ...


class Sender(Protocol):
    """Where messages go: a kafka-python `KafkaProducer` satisfies it."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...


# -- the pipeline --------------------------------------------------------------------------------------

_EVENT_COLUMNS = ["event_id", "source", "case_id", "category", "cell", "subdistrict", "grid_kind", "received_at",
                  "ingested_at", "lon", "lat", "snapped", "merged", "grid_version", "request_type", "sensor_type",
                  "value", "description"]
_CASE_COLUMNS = ["case_id", "category", "discovered_by", "cell", "subdistrict", "grid_kind", "team", "status",
                 "priority", "created_at", "due_at", "closed_at", "reports", "sources", "reopened", "rule_id",
                 "ruleset_version", "grid_version", "revision"]
_TRANSITION_COLUMNS = ["case_id", "seq", "status", "team", "actor", "at", "reason"]
_READING_COLUMNS = ["sensor_id", "sensor_type", "minute", "readings", "last_value", "max_value", "cell"]
_COLUMNS = {"events": _EVENT_COLUMNS, "cases": _CASE_COLUMNS, "case_transitions": _TRANSITION_COLUMNS,
            "sensor_readings": _READING_COLUMNS}


def _row(obj: Any, columns: list[str]) -> dict[str, Any]:
    row = {c: getattr(obj, c) for c in columns}
    for k, v in row.items():
        if isinstance(v, datetime):
            row[k] = int(v.timestamp())
        elif isinstance(v, bool):
            row[k] = int(v)
        elif isinstance(v, tuple):
            row[k] = list(v)
    return row


@dataclass
class NaiveCounts:
    """What the naive pipeline did."""

    consumed: int = 0
    deadletters: int = 0
    unlocated: int = 0
    assignments: int = 0
    rows: int = 0
    inserts: int = 0
    refusals: int = 0
    first_at: float | None = None
    last_at: float = 0.0
    finished: bool = False
    routes: dict[str, tuple[str, str]] = field(default_factory=dict)   # case id -> (team, rule id) of dispatch


class NaivePipeline:
    """Processes one raw message at a time (`handle`), writing rows every `insert_every` per table."""

    def __init__(self, *, inputs: Topics, outputs: Topics, decoder: NaiveDecoder, locator: NaiveLocator,
                 gazetteer: Any, sensors: SensorRegistry, router: Any, db: RowWriter, sender: Sender,
                 insert_every: int = 100, policy: CorrelationPolicy | None = None) -> None:
        self.inputs, self.outputs = inputs, outputs
        self.decoder, self.locator, self.gazetteer = decoder, locator, gazetteer
        self.sensors, self.router, self.db, self.sender = sensors, router, db, sender
        self.insert_every = insert_every
        self.policy = policy or CorrelationPolicy()
        self.books: dict[str, CaseBook] = {}
        self.states: dict[str, SensorState] = {}
        self.minute_types: dict[str, str] = {}
        self.problem_cells: dict[str, str] = {}      # sensor -> cell of its alarm in the current minute
        self.watch: SilentWatch | None = None
        self.pending: dict[str, list[dict[str, Any]]] = {t: [] for t in _COLUMNS}
        self.counts = NaiveCounts()

    def handle(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        """Process one message completely (decode, locate, correlate, dispatch, write)."""
        self.counts.consumed += 1
        try:
            if topic == self.inputs.raw_hotline:
                self._report(self.decoder.hotline(value))
            elif topic == self.inputs.raw_patrol:
                self._report(self.decoder.patrol(value))
            elif topic == self.inputs.raw_iot:
                self._reading(self.decoder.reading(value))
            elif topic == self.inputs.case_updates:
                self._update(self.decoder.update(value))
        except InvalidEvent as err:
            self._dead(topic, partition, offset, err.reason, value)

    def _dead(self, topic: str, partition: int, offset: int, reason: str, value: bytes) -> None:
        # the raw bytes are masked like the worker's (a ticket may hold a caller's phone)
        raw = mask_text(value.decode("utf-8", errors="replace"))
        self.sender.send(self.outputs.deadletter, key=topic.encode(), value=json.dumps({
            "source_topic": topic, "partition": partition, "offset": offset, "reason": reason, "raw": raw,
            "at": datetime.now(UTC).isoformat()}).encode())
        self.counts.deadletters += 1

    def _report(self, event: Event) -> None:
        lon, lat = event.lon, event.lat
        if (lon is None or lat is None) and event.address:
            point = self.gazetteer.resolve(event.address)
            if point is not None:
                lon, lat = point
                event = replace(event, lon=lon, lat=lat)
        if lon is None or lat is None:
            self.sender.send(self.outputs.unlocated, value=json.dumps(
                {"event_id": event.event_id, "address": event.address, "category": event.category}).encode())
            self.counts.unlocated += 1
            return
        location = self.locator.locate(lon, lat)
        located = replace(event, location=location)
        if event.sensor_id is not None:
            self.problem_cells[event.sensor_id] = location.cell or ""
        key = book_key(location)
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = CaseBook(key, self.policy)
        book.tick(located.occurred_at)
        out = book.escalate_overdue()
        book.add_event(located, self.router, out)
        book.escalate_overdue(out=out)
        self._emit(out)

    def _reading(self, reading: Reading) -> None:
        sid = reading.sensor_id
        sensor: Sensor | None = self.sensors.get(sid)
        if sensor is None:
            kind = self.sensors.types.get(reading.sensor_type)
            if kind is not None and reading.lon is not None and reading.lat is not None:
                # an unregistered device placed by its message alarms with its type's defaults (docs/cases.md §6.1)
                sensor = Sensor.of_type(sid, kind, reading.lon, reading.lat, registered=False)
        elif sensor.sensor_type != reading.sensor_type:
            raise InvalidEvent("sensor_type does not match the registry")
        ts = reading.at.timestamp()
        if self.watch is None:
            self.watch = SilentWatch(self.states, self.sensors)
        if ts >= self.watch.next_check:
            # the registered sensors that fell silent by the newest reading time (docs/cases.md §6.3)
            for at, silent in self.watch.scan(ts):
                fall_silent(self.states[silent], at)
                self._report(fault_event(self.sensors.sensors[silent], self.states[silent]))
        state = self.states.get(sid)
        if state is None:
            state = self.states[sid] = SensorState()
            if sensor is not None and sensor.registered:
                self.watch.add(ts + sensor.silent_s)
        before = state.minute
        if before and ts >= before + 60:
            self._minute_row(sid, state)
        done = apply_reading(state, ts, reading.value, sensor)
        self.minute_types[sid] = reading.sensor_type
        self.watch.now = max(self.watch.now, state.last_at)
        if done == LATE or sensor is None:
            return
        if done & FAULT:
            self._report(fault_event(sensor, state))
        if done & ALARM:
            self._report(alarm_event(reading, sensor, state, again=bool(done & REALARM)))
        if done & RESUMED and sensor.registered:
            self.watch.add(ts + sensor.silent_s)

    def _minute_row(self, sid: str, state: SensorState) -> None:
        # like the worker: a minute row names the cell only when the sensor raised a problem in it
        cell = self.problem_cells.pop(sid, "")
        self._add("sensor_readings", {
            "sensor_id": sid, "sensor_type": self.minute_types.get(sid, ""), "minute": int(state.minute),
            "readings": state.minute_readings, "last_value": state.last_value,
            "max_value": state.minute_max if math.isfinite(state.minute_max) else state.last_value, "cell": cell})

    def _update(self, update: CaseUpdate) -> None:
        try:
            key = case_book_key(update.case_id)
        except ValueError as err:
            raise InvalidEvent(f"case_id: {err}") from None
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = CaseBook(key, self.policy)
        book.tick(update.at)
        out = book.escalate_overdue()
        book.apply_update(update, self.router, out)
        book.escalate_overdue(out=out)
        self.counts.refusals += len(out.refusals)
        self._emit(out)

    def _emit(self, out: Outcome) -> None:
        for a in out.assignments:
            self.sender.send(self.outputs.assignments, key=a.team.encode(),
                             value=json.dumps(a.to_json(), ensure_ascii=False).encode())
            self.counts.assignments += 1
            if a.kind == "dispatch":
                self.counts.routes.setdefault(a.case_id, (a.team, a.rule_id))
        for e in out.events:
            self._add("events", _row(e, _EVENT_COLUMNS))
        for t in out.transitions:
            self._add("case_transitions", _row(t, _TRANSITION_COLUMNS))
        for c in out.cases.values():
            self._add("cases", _row(c, _CASE_COLUMNS))

    def _add(self, table: str, row: dict[str, Any]) -> None:
        rows = self.pending[table]
        rows.append(row)
        if len(rows) >= self.insert_every:
            self._write(table)

    def _write(self, table: str) -> None:
        rows = self.pending[table]
        if rows:
            self.db.insert_dicts(table, _COLUMNS[table], rows)
            self.counts.rows += len(rows)
            self.counts.inserts += 1
            self.pending[table] = []

    def finish(self) -> None:
        """Write each sensor's current minute and every pending row (end of input)."""
        for sid, state in self.states.items():
            if state.minute:
                self._minute_row(sid, state)
        for table in _COLUMNS:
            self._write(table)


def run_from_kafka(pipeline: NaivePipeline, consumer: Any, ends: dict[Any, int], producer: Any,
                   timeout_s: float = 600.0) -> NaiveCounts:
    """Consume `consumer` (assigned to the raw partitions, at the beginning) until every partition reached its
    end offset in `ends` (TopicPartition -> offset) or `timeout_s` passed (`finished` says which), one message
    at a time; then write what is pending and wait for the producer. `counts.first_at`/`last_at` are wall
    times of the first message and the last write."""
    counts = pipeline.counts
    left = {tp: end for tp, end in ends.items() if end > 0}
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        for tp, messages in consumer.poll(timeout_ms=200, max_records=500).items():
            for m in messages:
                if counts.first_at is None:
                    counts.first_at = time.time()
                pipeline.handle(m.topic, m.partition, m.offset, m.value or b"")
                if tp in left and m.offset + 1 >= left[tp]:
                    del left[tp]
    counts.finished = not left     # cut at `timeout_s`: the rate is still that of what was consumed
    pipeline.finish()
    producer.flush(timeout=120)
    counts.last_at = time.time()
    return counts
