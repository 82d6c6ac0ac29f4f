"""The ingest stage's chain on each batch of a raw topic: decode -> validate -> sensor alarms -> locate.

Nothing here talks to Kafka or ClickHouse; the runtime (pipeline.runtime.ingest) calls `Ingest` on each batch
and sends or stores what it returns. Per raw topic (partitioned by source id), `Ingest` decodes and validates each
message, keeps sensor alarm state (pipeline.stages.sensors), locates in one batched grid lookup, and returns the
located reports keyed by their sub-district (`pipeline.wire.book_key`), the dead letters, the unlocated tickets
and the sensor aggregates. The next stage is pipeline.stages.casestage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Protocol

import numpy as np

from pipeline.model.events import Event, Location
from pipeline.model.records import ReadingColumns, SensorReadingRow
from pipeline.model.sources import Source, SourceSpec
from pipeline.stages.decode import Decoder, Reading, ReadingFields
from pipeline.stages.fields import InvalidEvent
from pipeline.stages.registry import Sensor, SensorRegistry
from pipeline.stages.sensors import (
    ALARM,
    APPLIED,
    FAULT,
    LATE,
    LIVE_S,
    REALARM,
    RESUMED,
    SensorState,
    SilentWatch,
    alarm_event,
    apply_reading,
    fall_silent,
    fault_event,
    minute_start,
)
from pipeline.wire import DeadLetter, Message, book_key, case_book_key, encode_located, encode_update

log = logging.getLogger("cityops.flow")


class Locator(Protocol):
    """What ingest needs from the grid (grid.index.GridIndex satisfies it)."""

    version: str

    def locate_batch(self, lons: Any, lats: Any) -> Any: ...


class Geocoder(Protocol):
    def resolve(self, address: str) -> tuple[float, float] | None: ...


@dataclass
class IngestResult:
    located: list[tuple[str, bytes]] = field(default_factory=list)    # (grid key, located message)
    located_at: list[float] = field(default_factory=list)    # when each located item happened (epoch seconds)
    deadletters: list[DeadLetter] = field(default_factory=list)
    unlocated: list[bytes] = field(default_factory=list)
    readings: list[SensorReadingRow] = field(default_factory=list)
    accepted: int = 0
    late_readings: int = 0
    unknown_sensors: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)     # sensors whose state a `readings` call changed


# -- stage 1: ingest -----------------------------------------------------------------------------------

_LAST_AT = attrgetter("last_at")


@dataclass
class Ingest:
    decoder: Decoder
    grid: Locator
    gazetteer: Geocoder
    sensors: SensorRegistry
    # what judges silent sensors: each partition's newest reading time ("stream": deterministic, replays and
    # simulations), or the wall clock while the partition is live ("wall": Settings.sla_clock)
    silent_clock: str = "stream"
    _watches: dict[int, SilentWatch] = field(default_factory=dict, repr=False)
    _guests: dict[str, Sensor] = field(default_factory=dict, repr=False)

    def take(self, source: SourceSpec, messages: Sequence[Message], states: dict[str, SensorState] | None = None,
             columns: ReadingColumns | None = None) -> IngestResult:
        """A batch of one source's messages, down the path its row in pipeline.model.sources names (`states`:
        the partition's sensor states, for readings)."""
        if source.path == "readings":
            if states is None:
                raise ValueError(f"{source.name}: readings need their partition's sensor states")
            return self.readings(messages, states, columns)
        if source.path == "updates":
            return self.updates(messages)
        return self._reports(getattr(self.decoder, source.decoder), messages)

    def reports(self, source: Source, messages: Sequence[Message]) -> IngestResult:
        """Hotline tickets or patrol reports: decode, geocode addresses, locate, key by grid."""
        return self._reports(self.decoder.for_source(source), messages)

    def _reports(self, decode: Callable[[bytes], Event], messages: Sequence[Message]) -> IngestResult:
        out = IngestResult()
        events: list[Event] = []
        origins: list[Message | None] = []
        for msg in messages:
            try:
                events.append(decode(msg.value))
                origins.append(msg)
            except InvalidEvent as err:
                out.deadletters.append(_dead(msg, err.reason))
        self._locate_into(events, origins, out)
        return out

    def readings(self, messages: Sequence[Message], states: dict[str, SensorState],
                 columns: ReadingColumns | None = None) -> IngestResult:
        """Sensor readings of one partition: update each sensor's state (the caller persists `states`),
        aggregate per minute, and pass on an alarm when a threshold is crossed (or stays crossed for
        `realarm`) and a device-fault report when a sensor is broken (pipeline.stages.sensors.apply_reading).

        A sensor missing from the registry whose message has a position and a known type alarms with its type's
        defaults there; one without is aggregated only. Each time the partition's clock (its newest reading
        time) crosses a silent-check boundary, the partition's registered sensors are checked for silence
        (pipeline.stages.sensors.SilentWatch) at that point of the input, so a replay raises the same faults.

        The sensor-minute rows go to `out.readings`, or, given `columns`, straight into those column builders
        (the worker's fast path); `out.touched` names the sensors whose state changed either way."""
        out = IngestResult()
        problems: list[Event] = []
        origins: list[Message | None] = []
        touched: dict[str, str] = {}        # sensor id -> its type, for the registered sensors this batch changed
        strangers: dict[str, str] = {}      # the same for sensors missing from the registry
        faulted: set[str] = set()           # sensors the silent watch changed
        if columns is None:
            rows = out.readings

            def emit(sid: str, stype: str, state: SensorState, cell: str, registered: bool = True) -> None:
                rows.append(_reading_row(sid, stype, state, cell, registered))
        else:
            append = columns.append

            def emit(sid: str, stype: str, state: SensorState, cell: str, registered: bool = True) -> None:
                append(sid, stype, int(state.minute), state.minute_readings, state.last_value,
                       state.minute_max, cell, registered)

        def events(msg: Message, done: int, sensor: Sensor, state: SensorState, fields: ReadingFields) -> None:
            """The alarm and fault events of a reading that raised any."""
            if done & FAULT:
                problems.append(fault_event(sensor, state))
                origins.append(msg)
            if done & ALARM:
                sid, stype, value, _, at, lon, lat = fields
                problems.append(alarm_event(Reading(sid, stype, value, at, lon, lat), sensor, state,
                                            again=bool(done & REALARM)))
                origins.append(msg)

        def stranger(msg: Message, fields: ReadingFields) -> bool:
            """A reading of a sensor missing from the registry (rare: kept off the registered sensors' path);
            True when it is late. Placed by its message and of a known type, it is judged like a registered
            sensor with its type's defaults, except for silence (nobody said it should report)."""
            sid, stype, value, ts, _, lon, lat = fields
            out.unknown_sensors.add(sid)
            sensor = self._guest(sid, stype, lon, lat) if lon is not None and lat is not None else None
            state = state_of(sid)
            if state is None:
                state = states[sid] = SensorState()
            if state.minute and ts >= state.minute + 60 and sid in strangers:
                emit(sid, strangers[sid], state, "", False)
            done = apply_reading(state, ts, value, sensor)
            if done == LATE:
                return True
            strangers[sid] = stype
            if done != APPLIED and sensor is not None:
                events(msg, done, sensor, state, fields)
            return False

        watch = self._watch(states)
        if self.silent_clock == "wall":
            self._check_silent(watch, self._judged(watch), problems, origins, faulted)
        # the next boundary, after the partition's clock: a reading at or after it is the newest, and moves the clock
        check_at = watch.next_check
        decoder, sensor_of, state_of = self.decoder, self.sensors.sensors.get, states.get
        fast, bounds = decoder.reading_fields, decoder.reading_bounds()
        late = 0
        for msg in messages:
            fields = fast(msg.value, bounds)
            if fields is None:          # invalid, or unusual: the full decoder decides (and says why)
                try:
                    r = decoder.reading(msg.value)
                except InvalidEvent as err:
                    out.deadletters.append(_dead(msg, err.reason))
                    continue
                fields = (r.sensor_id, r.sensor_type, r.value, r.at.timestamp(), r.at, r.lon, r.lat)
            sid, stype, value, ts, at, lon, lat = fields
            sensor = sensor_of(sid)
            if sensor is None:
                if ts >= check_at:
                    self._check_silent(watch, ts, problems, origins, faulted)
                    check_at = watch.next_check
                late += stranger(msg, fields)
                continue
            if sensor.sensor_type != stype:
                out.deadletters.append(_dead(msg, f"sensor_type: {stype!r} does not match the "
                                                  f"registry's {sensor.sensor_type!r} for sensor {sid}"))
                continue
            if ts >= check_at:      # the clock crosses a boundary here, whatever the batches: deterministic
                self._check_silent(watch, ts, problems, origins, faulted)
                check_at = watch.next_check
            state = state_of(sid)
            if state is None:
                state = states[sid] = SensorState()
                watch.add(ts + sensor.silent_s)
            prev_minute = state.minute
            if prev_minute and ts >= prev_minute + 60 and sid in touched:
                emit(sid, touched[sid], state, "")
            done = apply_reading(state, ts, value, sensor)
            if done == APPLIED:
                touched[sid] = stype
                continue
            if done == LATE:
                late += 1
                continue
            touched[sid] = stype
            events(msg, done, sensor, state, fields)
            if done & RESUMED:
                watch.add(ts + sensor.silent_s)
        if touched or strangers:    # the partition's clock: its newest reading, one of this batch's sensors'
            watch.now = max(watch.now, *map(_LAST_AT, map(states.__getitem__, [*touched, *strangers])))
        watch.known = len(states)
        out.accepted += len(messages) - len(out.deadletters)
        out.late_readings += late
        self._locate_into(problems, origins, out, count_accepted=False)
        cells = {e.sensor_id: (e.location.cell or "") for e in problems if e.location and e.sensor_id}
        placed = [self._guests[sid] for sid in strangers if sid not in cells and sid in self._guests]
        if placed:
            cells.update(self._cells_of(placed))
        for sid, stype in touched.items():
            emit(sid, stype, states[sid], cells.get(sid, ""))
        for sid, stype in strangers.items():
            emit(sid, stype, states[sid], cells.get(sid, ""), False)
        out.touched = set(touched) | set(strangers) | faulted
        return out

    def silent_sweep(self, states: dict[str, SensorState]) -> IngestResult:
        """With the wall clock: report the sensors of a partition that fell silent while no reading came (the
        worker calls this every few seconds); nothing with the stream clock, which only readings move."""
        out = IngestResult()
        if self.silent_clock != "wall":
            return out
        problems: list[Event] = []
        origins: list[Message | None] = []
        watch = self._watch(states)
        self._check_silent(watch, self._judged(watch), problems, origins, out.touched)
        self._locate_into(problems, origins, out, count_accepted=False)
        return out

    def forget_watches(self) -> None:
        """Drop the silent watches (the worker's partitions moved: the next batch of each rebuilds its own)."""
        self._watches.clear()

    def _watch(self, states: dict[str, SensorState]) -> SilentWatch:
        watch = self._watches.get(id(states))
        if watch is None or not watch.fits(states, self.sensors):
            watch = self._watches[id(states)] = SilentWatch(states, self.sensors)
        return watch

    def _judged(self, watch: SilentWatch) -> float:
        """The wall clock's "now" for a partition: the wall clock while the partition is live (its newest reading
        is at most `LIVE_S` old), else its own clock. A partition catching up on a backlog, or one whose
        readings all stopped (an upstream outage, not thousands of broken devices), reports no silence by the
        wall clock: its readings' times judge it as they come."""
        wall = time.time()
        return wall if wall - watch.now <= LIVE_S else watch.now

    def _check_silent(self, watch: SilentWatch, now: float, problems: list[Event],
                      origins: list[Message | None], changed: set[str]) -> None:
        if now < watch.next_check:
            return
        sensors = self.sensors.sensors
        for at, sid in watch.scan(now):
            state = watch.states[sid]
            fall_silent(state, at)
            problems.append(fault_event(sensors[sid], state))
            origins.append(None)
            changed.add(sid)

    def _guest(self, sid: str, stype: str, lon: float, lat: float) -> Sensor | None:
        """An unregistered sensor placed by its message, with its type's defaults (None: unknown type)."""
        guest = self._guests.get(sid)
        if guest is not None and guest.sensor_type == stype and guest.lon == lon and guest.lat == lat:
            return guest
        kind = self.sensors.types.get(stype)
        if kind is None:
            return None
        guest = self._guests[sid] = Sensor.of_type(sid, kind, lon, lat, registered=False)
        return guest

    def _cells_of(self, sensors: list[Sensor]) -> dict[str, str]:
        """The grid cell of each sensor's place ("" outside the grid)."""
        result = self.grid.locate_batch(np.array([s.lon for s in sensors]), np.array([s.lat for s in sensors]))
        return {s.sensor_id: (result.cell[i] or "") for i, s in enumerate(sensors)}

    def updates(self, messages: Sequence[Message]) -> IngestResult:
        """Case updates: validate and key by the case's grid so they meet the case."""
        out = IngestResult()
        for msg in messages:
            try:
                update = self.decoder.case_update(msg.value)
                key = case_book_key(update.case_id)
            except InvalidEvent as err:
                out.deadletters.append(_dead(msg, err.reason))
                continue
            except ValueError as err:
                out.deadletters.append(_dead(msg, f"case_id: {err}"))
                continue
            out.located.append((key, encode_update(update)))
            out.located_at.append(update.at.timestamp())
            out.accepted += 1
        return out

    def _locate_into(self, events: list[Event], origins: Sequence[Message | None], out: IngestResult,
                     count_accepted: bool = True) -> None:
        """Locate `events` in one grid lookup; each located one goes to `out.located` (and replaces its entry in
        `events`), each without a place to `out.unlocated`. One the grid refuses is a dead letter of its input
        message; a silent fault has none (it is logged: a registry position outside the grid)."""
        lons = np.full(len(events), np.nan)
        lats = np.full(len(events), np.nan)
        unresolved: set[int] = set()
        for i, e in enumerate(events):
            if e.lon is not None and e.lat is not None:
                lons[i], lats[i] = e.lon, e.lat
            elif e.address:
                point = self.gazetteer.resolve(e.address)
                if point is None:
                    unresolved.add(i)
                else:
                    lons[i], lats[i] = point
                    events[i] = replace(e, lon=point[0], lat=point[1])
            else:
                unresolved.add(i)
        grid = self.grid
        result = grid.locate_batch(lons, lats) if events else None
        for i, e in enumerate(events):
            if i in unresolved:
                out.unlocated.append(encode_located(e))
                if count_accepted:
                    out.accepted += 1
                continue
            assert result is not None
            error = result.error[i]
            if error:
                origin = origins[i]
                if origin is not None:
                    out.deadletters.append(_dead(origin, f"location: {error}"))
                else:
                    log.warning("%s not located: %s", e.event_id, error)
                continue
            cell = result.cell[i]
            loc = Location(cell=cell, subdistrict=result.subdistrict[i], grid_kind=result.grid_kind[i],
                           grid_version=grid.version, snapped=bool(result.snapped[i]))
            located = events[i] = replace(e, location=loc)
            out.located.append((book_key(loc), encode_located(located)))
            out.located_at.append(e.occurred_at.timestamp())
            if count_accepted:
                out.accepted += 1


def _dead(msg: Message, reason: str) -> DeadLetter:
    return DeadLetter(source_topic=msg.topic, partition=msg.partition, offset=msg.offset, reason=reason,
                      raw=msg.value, at=datetime.now(UTC))


def _reading_row(sid: str, stype: str, state: SensorState, cell: str, registered: bool = True) -> SensorReadingRow:
    return SensorReadingRow(sensor_id=sid, sensor_type=stype, minute=minute_start(state),
                            readings=state.minute_readings, last_value=state.last_value,
                            max_value=state.minute_max, cell=cell, registered=registered)
