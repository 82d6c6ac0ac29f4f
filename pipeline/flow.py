"""The processing chain as plain batch functions: decode -> validate -> locate -> correlate -> dispatch.

Nothing here talks to Kafka or ClickHouse; the worker stages (pipeline.ingest_service, pipeline.cases_service)
call these on each batch and send or store what they return. Two stages:

1. `Ingest` (per raw topic, partitioned by source id): decode and validate each message, keep sensor alarm
   state, locate in one batched grid lookup, and return the located reports keyed by their grid
   (`pipeline.cases.book_key`: the sub-district), the dead letters, the unlocated tickets and the sensor aggregates.
2. `CaseStage` (the internal located topic, partitioned by sub-district): merge reports into cases, dispatch,
   apply team updates, escalate what is overdue by the stage's clock (docs/cases.md §7); returns assignments,
   ClickHouse rows and refusals.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal, Protocol

import numpy as np
import orjson

from pipeline.cases import CaseBook, CorrelationPolicy, Outcome, Router, book_key, case_book_key
from pipeline.decode import CaseUpdate, Decoder, InvalidEvent, Reading, ReadingFields
from pipeline.model import Event, Location, Source, record
from pipeline.privacy import mask_text, redact_bytes, redact_raw
from pipeline.records import ReadingColumns, SensorReadingRow
from pipeline.sensors import (
    ALARM,
    APPLIED,
    FAULT,
    LATE,
    LIVE_S,
    REALARM,
    RESUMED,
    Sensor,
    SensorRegistry,
    SensorState,
    SilentWatch,
    alarm_event,
    apply_reading,
    fall_silent,
    fault_event,
    minute_start,
)

log = logging.getLogger("cityops.flow")


@record
class Message:
    """One consumed Kafka message, with where it came from (for dead letters)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


@record
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes
    at: datetime

    def to_json(self) -> bytes:
        try:
            self.raw.decode("utf-8")
            raw_text, encoding = redact_raw(self.raw), "utf-8"
        except UnicodeDecodeError:
            raw_text, encoding = base64.b64encode(redact_bytes(self.raw)).decode(), "base64"
        return orjson.dumps({
            "source_topic": self.source_topic, "partition": self.partition, "offset": self.offset,
            "reason": mask_text(self.reason), "raw": raw_text, "raw_encoding": encoding,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        })


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


class DeadLetterLimitExceeded(RuntimeError):
    """Too large a share of recent input was invalid: most likely a bad deploy upstream. Stop loudly."""


class DeadLetterLimit:
    """Stops the worker when more than `max_ratio` of the last `window` messages were dead-lettered."""

    def __init__(self, max_ratio: float = 0.5, window: int = 2000, min_messages: int = 500) -> None:
        self.max_ratio, self.window, self.min_messages = max_ratio, window, min_messages
        self._runs: deque[list[Any]] = deque()     # [bad?, count] runs of the last `window` messages, oldest first
        self._len = 0
        self._bad = 0

    def record(self, ok: int, bad: int) -> None:
        """A batch's `ok` accepted then `bad` dead-lettered messages (in runs: cheap for batches of thousands)."""
        runs = self._runs
        for flag, n in ((False, ok), (True, bad)):
            if n <= 0:
                continue
            if runs and runs[-1][0] is flag:
                runs[-1][1] += n
            else:
                runs.append([flag, n])
            self._len += n
            self._bad += n if flag else 0
        while self._len > self.window:
            oldest = runs[0]
            drop = min(oldest[1], self._len - self.window)
            oldest[1] -= drop
            self._len -= drop
            self._bad -= drop if oldest[0] else 0
            if not oldest[1]:
                runs.popleft()
        if self.max_ratio < 1.0 and self._len >= self.min_messages:
            ratio = self._bad / self._len
            if ratio > self.max_ratio:
                raise DeadLetterLimitExceeded(
                    f"{ratio:.0%} of the last {self._len} messages were dead-lettered "
                    f"(limit {self.max_ratio:.0%}); stopping so a bad upstream deploy is noticed"
                )


# -- messages on the internal located topic ------------------------------------------------------------

def encode_located(event: Event) -> bytes:
    loc = event.location
    return orjson.dumps({
        "type": "event", "event_id": event.event_id, "source": event.source, "category": event.category,
        "occurred_at": event.occurred_at.timestamp(), "lon": event.lon, "lat": event.lat,
        "address": event.address, "description": event.description, "request_type": event.request_type,
        "channel": event.channel, "team": event.team, "actor": event.actor, "sensor_id": event.sensor_id,
        "sensor_type": event.sensor_type, "value": event.value, "caller_hash": event.caller_hash,
        "location": None if loc is None else [loc.cell, loc.subdistrict, loc.grid_kind, loc.grid_version,
                                              loc.snapped],
        "scope": event.scope, "fault": event.fault,
        "media_url": event.media_url, "address_id": event.address_id, "attributes": event.attributes,
    })


def encode_update(update: CaseUpdate) -> bytes:
    return orjson.dumps({
        "type": "update", "update_id": update.update_id, "case_id": update.case_id, "action": update.action,
        "team": update.team, "actor": update.actor, "at": update.at.timestamp(), "note": update.note,
        "photo_url": update.photo_url,
    })


def decode_located(raw: bytes) -> Event | CaseUpdate:
    d = orjson.loads(raw)
    if d["type"] == "update":
        return CaseUpdate(update_id=d["update_id"], case_id=d["case_id"], action=d["action"], team=d["team"],
                          actor=d["actor"], at=datetime.fromtimestamp(d["at"], UTC), note=d["note"],
                          photo_url=d.get("photo_url") or "")
    loc = d["location"]
    return Event(
        event_id=d["event_id"], source=d["source"], category=d["category"],
        occurred_at=datetime.fromtimestamp(d["occurred_at"], UTC), lon=d["lon"], lat=d["lat"],
        address=d["address"], description=d["description"], request_type=d["request_type"],
        channel=d["channel"], team=d["team"], actor=d["actor"], sensor_id=d["sensor_id"],
        sensor_type=d["sensor_type"], value=d["value"], caller_hash=d["caller_hash"],
        location=None if loc is None else Location(cell=loc[0], subdistrict=loc[1], grid_kind=loc[2],
                                                   grid_version=loc[3], snapped=bool(loc[4])),
        scope=d.get("scope"), fault=d.get("fault"),
        # absent in messages of a worker before the Open311 fields (a rolling upgrade)
        media_url=d.get("media_url"), address_id=d.get("address_id"), attributes=d.get("attributes"),
    )


# -- stage 1: ingest -----------------------------------------------------------------------------------

_LAST_AT = attrgetter("last_at")


def _silent_clock() -> str:
    return "wall" if os.environ.get("CITYOPS_SLA_CLOCK", "stream") in ("wall", "live") else "stream"


@dataclass
class Ingest:
    decoder: Decoder
    grid: Locator
    gazetteer: Geocoder
    sensors: SensorRegistry
    # what judges silent sensors: each partition's newest reading time ("stream": deterministic, replays and
    # simulations), or the wall clock while the partition is live ("wall": CITYOPS_SLA_CLOCK=wall)
    silent_clock: str = field(default_factory=_silent_clock)
    _watches: dict[int, SilentWatch] = field(default_factory=dict, repr=False)
    _guests: dict[str, Sensor] = field(default_factory=dict, repr=False)

    def reports(self, source: Source, messages: Sequence[Message]) -> IngestResult:
        """Hotline tickets or patrol reports: decode, geocode addresses, locate, key by grid."""
        out = IngestResult()
        decode = self.decoder.for_source(source)
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
        `realarm`) and a device-fault report when a sensor is broken (pipeline.sensors.apply_reading).

        A sensor missing from the registry whose message has a position and a known type alarms with its type's
        defaults there; one without is aggregated only. Each time the partition's clock (its newest reading
        time) crosses a silent-check boundary, the partition's registered sensors are checked for silence
        (pipeline.sensors.SilentWatch) at that point of the input, so a replay raises the same faults.

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


# -- stage 2: cases --------------------------------------------------------------------------------------

SlaClock = Literal["stream", "wall", "live"]
LIVE_WITHIN = timedelta(minutes=2)    # `live`: the stage is live when its newest item is at most this old


def _wall_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CaseStage:
    """Applies located reports and updates to their books. The clock (docs/cases.md §7.2): `stream`, each book's
    own latest report or update time; `wall`, `wall_now()`; `live` (`make run`), the stream clock while the stage
    works through a backlog (yesterday's history keeps its own times) and the wall clock once its newest item is
    within `LIVE_WITHIN` of now. Either way, before and after each item the book escalates whatever fell due
    before the clock's time, and dispatches are stamped with it."""

    router_source: Any          # an object with `.current` (rules.engine.RulesHolder) or a Router itself
    policy: CorrelationPolicy = field(default_factory=CorrelationPolicy)
    clock: SlaClock = "stream"
    wall_now: Callable[[], datetime] = _wall_now
    newest: datetime | None = None      # the newest item time seen (the `live` clock's test)

    def is_live(self, wall: datetime) -> bool:
        """`live` clock: has the stage caught up with the wall clock?"""
        return self.newest is not None and wall - self.newest <= LIVE_WITHIN

    def router(self) -> Router:
        current = getattr(self.router_source, "current", None)
        return current if current is not None else self.router_source  # type: ignore[no-any-return]

    def apply(self, items: Iterable[tuple[str, bytes]], books: dict[str, CaseBook]) -> Outcome:
        """Apply located reports and updates, in order, to the books they belong to. `books` maps book key ->
        book; a key not in it gets a new empty book (the caller loads existing ones first)."""
        out = Outcome()
        router = self.router()
        touched: dict[str, CaseBook] = {}
        wall = self.clock == "wall"
        for key, raw in items:
            book = books.get(key)
            if book is None:
                book = books[key] = CaseBook(key, self.policy)
            touched[key] = book
            item = decode_located(raw)
            if wall:
                now = self.wall_now()
            else:
                at = item.at if isinstance(item, CaseUpdate) else item.occurred_at
                book.tick(at)
                now = book.clock
                if self.clock == "live":
                    self.newest = at if self.newest is None or at > self.newest else self.newest
                    current = self.wall_now()
                    if self.is_live(current):
                        book.tick(current)
                        now = book.clock
            book.escalate_overdue(now, out)
            if isinstance(item, CaseUpdate):
                book.apply_update(item, router, out, now)
            else:
                book.add_event(item, router, out, now)
            book.escalate_overdue(now, out)
        for book in touched.values():
            book.expire_parked(out)
        return out

    def escalate(self, books: Iterable[CaseBook], now: datetime | None = None) -> Outcome:
        """Escalate what is overdue in `books` by the wall clock (the timer of quiet books, §7.2)."""
        out = Outcome()
        at = self.wall_now() if now is None else now
        if self.clock == "live" and not self.is_live(at):
            return out          # still on a backlog: each book's own input moves its clock
        for book in books:
            book.escalate_overdue(at, out)
        return out
