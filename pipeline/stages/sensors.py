"""IoT sensors: the alarm and fault state of each sensor, and the silent-sensor watch of an ingest partition
(docs/cases.md §6). The types and the registry (where a sensor is, what its thresholds are) are
pipeline.stages.registry.

A reading is not a problem; crossing a threshold is. `apply_reading` applies one reading with hysteresis
(separate alarm and clear levels) and debounce (N consecutive valid readings beyond the alarm level), so a
flapping sensor opens one problem, not ten; a sensor that stays beyond its alarm level alarms again every
`realarm`. A reading outside the type's `valid` range is an error reading: aggregated, never counted toward an
alarm or a clear. Broken devices raise device-fault reports (`error`, `stuck`, `silent`), one per episode.
Readings older than the sensor's latest are late (or replayed): they are counted, never re-applied, which makes
a replay of the topic change nothing.

Ids are stable, so a replay after a crash raises the same events: the n-th alarm of a sensor (re-alarms
included) is `iot:<sensor>:alarm<n>`, its n-th fault report `iot:<sensor>:fault<n>`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pipeline.model.events import DeviceFault, Event
from pipeline.stages.decode import Reading
from pipeline.stages.registry import (
    Sensor,
    SensorRegistry,
)
from rules.durations import format_duration

log = logging.getLogger("cityops.sensors")

STUCK_READINGS = 4                 # a stuck run is at least this many identical readings (and `stuck` long)
SILENT_CHECK_S = 600.0             # the silent watch looks at its sensors every 10 minutes of its clock
LIVE_S = 300.0                     # wall clock: a partition whose newest reading is older is not live (below)


# -- the type file -----------------------------------------------------------------------------------------


# -- the registry ------------------------------------------------------------------------------------------


# -- one sensor's state ------------------------------------------------------------------------------------

@dataclass(slots=True)
class SensorState:
    """One sensor's alarm and fault state and the current minute's reading aggregate (the ingest stage's state,
    stored in its changelog)."""

    alarm: bool = False
    streak: int = 0               # consecutive valid readings beyond the alarm level, while not in alarm
    last_at: float = 0.0          # the newest reading applied (POSIX seconds) and its value (error or not)
    last_value: float = 0.0
    alarms: int = 0               # alarms raised, re-alarms included (the n of `iot:<sensor>:alarm<n>`)
    minute: float = 0.0
    minute_readings: int = 0
    minute_max: float = -math.inf
    late: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    alarm_at: float = 0.0         # when the latest alarm or re-alarm was raised
    errors: int = 0               # consecutive error readings (outside the type's valid range)
    repeats: int = 0              # readings equal to the reading before them, in a row (a run of repeats+1)
    same_since: float = 0.0       # the time of the run's first reading (while repeats > 0)
    fault: str = ""               # the open fault episode: "error", "stuck", "silent"; "" when none
    faults: int = 0               # fault reports raised (the n of `iot:<sensor>:fault<n>`)
    fault_kind: str = ""          # the latest fault report: its kind, time and the value it reports
    fault_at: float = 0.0
    fault_value: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _STATE_FIELDS}
        d["minute_max"] = None if math.isinf(self.minute_max) else self.minute_max
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensorState:
        """A state from `to_dict`, or from an older version's (fields it lacks take their defaults; an alarm
        restored without its time counts from the sensor's last reading, so it re-alarms `realarm` later)."""
        if d.keys() == _STATE_NAMES:        # this version's own (a restore decodes every sensor's, issue #23)
            if d["minute_max"] is None:
                d["minute_max"] = -math.inf
            return cls(**d)
        known = {k: v for k, v in d.items() if k in _STATE_NAMES}
        known["minute_max"] = -math.inf if known.get("minute_max") is None else known["minute_max"]
        if known.get("alarm") and "alarm_at" not in known:
            known["alarm_at"] = known.get("last_at", 0.0)
        return cls(**known)


_STATE_FIELDS = tuple(f.name for f in fields(SensorState))
_STATE_NAMES = frozenset(_STATE_FIELDS)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one reading did: `problem` is the alarm it raised, `fault` the device-fault report it raised."""

    applied: bool             # False when late or replayed (older than the sensor's latest reading)
    problem: Event | None = None
    cleared: bool = False
    fault: Event | None = None


# What `apply_reading` did with a reading: LATE (0), or APPLIED with any of the flags ALARM (the alarm went off:
# see `alarm_event`; with REALARM when it went off again), CLEARED, FAULT (a fault report: see `fault_event`) and
# RESUMED (a fault episode ended). The readings hot path tests `done == APPLIED` first: nothing else to do.
LATE, APPLIED, ALARM, CLEARED, FAULT, RESUMED, REALARM = 0, 1, 2, 4, 8, 16, 32
_LATE = Observation(applied=False)


def apply_reading(state: SensorState, ts: float, value: float, sensor: Sensor | None) -> int:
    """Apply one reading (its time as a POSIX timestamp) to its sensor's state; returns LATE or APPLIED with
    flags (see above). A sensor that cannot be placed (`sensor` None) is aggregated and nothing else.

    The rules (docs/cases.md §6), in order. Episodes (`_episodes`, only for a reading that is not ordinary):
    any reading ends a silent episode, and a reading `silent` or more after the previous one reports that
    silence (time: previous + silent) unless an episode is open; a reading outside `valid` is an error reading:
    the `error_after`-th in a row raises an `error` fault, and it counts toward nothing else; a valid reading
    ends an `error` episode, and a valid reading other than the stuck value ends a `stuck` one. Stuck: a valid
    reading equal to the reading before it extends the run of identical readings (at least `STUCK_READINGS`
    readings and `stuck` long: a `stuck` fault), another value starts a new run. A fault is raised only while no
    episode is open, and at most one episode changes per reading. Alarm: `debounce` consecutive valid readings
    beyond the alarm level raise it, a valid reading back at the clear level clears it, and a valid reading
    beyond the alarm level at least `realarm` after the latest alarm raises it again.
    """
    last_at = state.last_at
    if ts <= last_at:
        state.late += 1
        return LATE
    minute = math.floor(ts / 60) * 60
    if minute != state.minute:
        state.minute, state.minute_readings, state.minute_max = minute, 0, -math.inf
    state.minute_readings += 1
    if value > state.minute_max:
        state.minute_max = value
    previous = state.last_value
    state.last_at, state.last_value = ts, value
    if sensor is None:
        return APPLIED
    # an ordinary reading (no episode open, no error reading before it, in time, valid) costs these compares
    if (state.fault or state.errors or ts - last_at >= sensor.silent_s
            or not sensor.valid_min <= value <= sensor.valid_max):
        done = _episodes(state, ts, value, sensor, last_at, previous)
        if done & _ERROR_READING:
            return done ^ _ERROR_READING
    else:
        done = APPLIED
    if value == previous:       # one compare tracks the run of identical readings
        repeats = state.repeats + 1
        if repeats == 1:
            state.same_since = last_at
        state.repeats = repeats
        if (repeats >= STUCK_READINGS - 1 and ts - state.same_since >= sensor.stuck_s and done == APPLIED
                and not state.fault):
            _report(state, "stuck", ts, value)
            state.fault = "stuck"
            done |= FAULT
    else:
        state.repeats = 0
    th = sensor.threshold
    if not state.alarm:
        if value >= th.alarm if th.direction == "above" else value <= th.alarm:
            state.streak += 1
            if state.streak >= th.debounce:
                state.alarm, state.streak, state.alarm_at = True, 0, ts
                state.alarms += 1
                return done | ALARM
        else:
            state.streak = 0
        return done
    if value <= th.clear if th.direction == "above" else value >= th.clear:
        state.alarm, state.streak = False, 0
        return done | CLEARED
    if ts - state.alarm_at >= sensor.realarm_s and (value >= th.alarm if th.direction == "above"
                                                     else value <= th.alarm):
        state.alarm_at = ts
        state.alarms += 1
        return done | ALARM | REALARM
    return done


_ERROR_READING = 64     # `_episodes`: an error reading, nothing more to apply


def _episodes(state: SensorState, ts: float, value: float, sensor: Sensor, last_at: float,
              previous: float) -> int:
    """The fault-episode rules of `apply_reading` for a reading that is not ordinary: APPLIED with FAULT or
    RESUMED when an episode changed, and `_ERROR_READING` for a reading outside the valid range."""
    done = APPLIED
    fault = state.fault
    if not last_at:     # the first reading repeats nothing (its `previous` is no reading)
        state.repeats = -1
    if fault == "silent":
        state.fault = fault = ""
        done = APPLIED | RESUMED
    elif not fault and last_at and ts - last_at >= sensor.silent_s:
        # the partition's watch did not report this silence before the reading came (its clock had not crossed a
        # check boundary since): report it now, as the watch would have (same time, same id), and it is over
        _report(state, "silent", last_at + sensor.silent_s, previous)
        done = APPLIED | FAULT
    if not sensor.valid_min <= value <= sensor.valid_max:
        state.errors += 1
        if state.errors >= sensor.error_after and not fault and done == APPLIED:
            _report(state, "error", ts, value)
            state.fault = "error"
            done |= FAULT
        return done | _ERROR_READING
    state.errors = 0
    # a stuck episode ends on a value other than the one it reported (an error reading in between does not end it)
    if done == APPLIED and (fault == "error" or fault == "stuck" and value != state.fault_value):
        state.fault = ""
        done |= RESUMED
    return done


def _report(state: SensorState, kind: DeviceFault, at: float, value: float) -> None:
    state.faults += 1
    state.fault_kind, state.fault_at, state.fault_value = kind, at, value


def fall_silent(state: SensorState, at: float) -> None:
    """Open a silent episode found by the partition's watch (`at`: last reading + silent); see `fault_event`."""
    _report(state, "silent", at, state.last_value)
    state.fault = "silent"


def alarm_event(reading: Reading, sensor: Sensor, state: SensorState, again: bool = False) -> Event:
    """The problem a reading that set off its sensor's alarm raises (after `apply_reading` returned ALARM): at
    the sensor's place, with its type's scope. `again`: a re-alarm (REALARM) of an alarm that stayed on."""
    th = sensor.threshold
    why = (f"{sensor.sensor_type} {reading.value:g} still beyond {th.alarm:g} "
           f"{format_duration(_td(sensor.realarm_s))} after the previous alarm" if again else
           f"{sensor.sensor_type} {reading.value:g} beyond {th.alarm:g} for {th.debounce} reading(s)")
    return replace(reading.event(sensor.category, f"iot:{sensor.sensor_id}:alarm{state.alarms}"),
                   lon=sensor.lon, lat=sensor.lat, scope=sensor.scope, description=why)


def fault_event(sensor: Sensor, state: SensorState) -> Event:
    """The device-fault report of the fault `apply_reading` (FAULT) or `fall_silent` just raised: source iot,
    the sensor's category, place and scope, `fault` set, id `iot:<sensor>:fault<n>`, time of the fault (the
    `error_after`-th error reading, the reading that made the run stuck, or last reading + silent)."""
    kind = cast(DeviceFault, state.fault_kind)
    value = state.fault_value
    if kind == "error":
        why = (f"{sensor.sensor_type} sent {state.errors} readings outside [{sensor.valid_min:g}, "
               f"{sensor.valid_max:g}] in a row (last {value:g})")
    elif kind == "stuck":
        why = (f"{sensor.sensor_type} read {value:g} {state.repeats + 1} times in a row for "
               f"{format_duration(_td(state.fault_at - state.same_since))}")
    else:
        why = f"{sensor.sensor_type} sent no reading for {format_duration(_td(sensor.silent_s))} (last {value:g})"
    return Event(event_id=f"iot:{sensor.sensor_id}:fault{state.faults}", source="iot", category=sensor.category,
                 occurred_at=datetime.fromtimestamp(state.fault_at, UTC), lon=sensor.lon, lat=sensor.lat,
                 description=why, sensor_id=sensor.sensor_id, sensor_type=sensor.sensor_type, value=value,
                 scope=sensor.scope, fault=kind)


def _td(seconds: float) -> timedelta:
    return timedelta(seconds=round(seconds))


def observe(state: SensorState, reading: Reading | Event, sensor: Sensor | None) -> Observation:
    """Apply one reading to its sensor's state (`apply_reading`) and build the events it raised."""
    if isinstance(reading, Event):
        reading = Reading(reading.sensor_id or "", reading.sensor_type or "", reading.value or 0.0,
                          reading.occurred_at, reading.lon, reading.lat)
    done = apply_reading(state, reading.at.timestamp(), reading.value, sensor)
    if done == LATE:
        return _LATE
    problem = (alarm_event(reading, sensor, state, again=bool(done & REALARM))
               if sensor is not None and done & ALARM else None)
    fault = fault_event(sensor, state) if sensor is not None and done & FAULT else None
    return Observation(applied=True, problem=problem, cleared=bool(done & CLEARED), fault=fault)


def minute_start(state: SensorState) -> datetime:
    return datetime.fromtimestamp(state.minute, UTC)


# -- silent sensors ----------------------------------------------------------------------------------------

def next_check(now: float) -> float:
    """The first silent-check boundary after `now` (boundaries every `SILENT_CHECK_S` of the clock)."""
    return (math.floor(now / SILENT_CHECK_S) + 1) * SILENT_CHECK_S


class SilentWatch:
    """Which registered sensors of one ingest partition have fallen silent, by that partition's clock.

    The clock is the newest reading time applied on the partition, which is the largest `last_at` of its
    states: a watch rebuilt after a restart or a rebalance (from the restored states) has the clock the partition
    had at its last checkpoint. The partition is checked each time its clock crosses a boundary (every
    `SILENT_CHECK_S` of it), at the reading that crosses it, before that reading is applied: the same points of
    the input in every run, whatever the batches. A check (`scan`) finds every registered sensor without an open
    fault episode whose `last_at + silent_s` is at or before the clock: a pure function of the states, so a
    replay raises the same silent faults, at the same times, with the same ids.

    It is cheap for 61,000 sensors: the hot path only compares each reading's time with the clock, and a check
    that cannot find anything is skipped. `min_due` is a lower bound of the time the next watched sensor can fall
    silent (readings only move a sensor's due time later; a new sensor or one whose fault episode ended lowers
    it: `add`); a boundary before it needs no look at the sensors. A look computes the next bound, so with
    sensors reporting every 15 minutes and a silent period of an hour about one boundary in five looks.
    """

    __slots__ = ("states", "registry", "now", "next_check", "min_due", "min_silent", "known")

    def __init__(self, states: dict[str, SensorState], registry: SensorRegistry) -> None:
        self.states = states
        self.registry = registry
        self.now = max((s.last_at for s in states.values()), default=0.0)
        self.next_check = next_check(self.now)
        self.min_due = -math.inf      # not known yet: the first boundary looks
        self.min_silent = min((s.silent_s for s in registry.sensors.values()), default=math.inf)
        self.known = len(states)      # states it has accounted for; another count means a restore: rebuild

    def fits(self, states: dict[str, SensorState], registry: SensorRegistry) -> bool:
        """Whether this watch still describes `states` under `registry` (else build a new one)."""
        return self.states is states and self.registry is registry and self.known == len(states)

    def add(self, due_at: float) -> None:
        """A registered sensor may fall silent from `due_at` (a new sensor, or one whose fault episode ended)."""
        if due_at < self.min_due:
            self.min_due = due_at

    def scan(self, now: float) -> list[tuple[float, str]]:
        """(fault time, sensor id) of every watched sensor silent at `now`, by time then id (the caller opens
        their silent episodes: `fall_silent`); moves the next check past `now`."""
        self.next_check = next_check(now)
        if now < self.min_due:
            return []
        sensors = self.registry.sensors
        floor = now - self.min_silent        # a reading after this is too recent to be silent, whatever its type
        oldest = math.inf                    # the oldest such reading
        min_due = math.inf
        found: list[tuple[float, str]] = []
        for sid, state in self.states.items():
            last = state.last_at
            if last > floor:
                if last < oldest:
                    oldest = last
                continue
            sensor = sensors.get(sid)
            if sensor is None or state.fault or not last:
                continue
            due = last + sensor.silent_s
            if due <= now:
                found.append((due, sid))
            elif due < min_due:
                min_due = due
        self.min_due = min(min_due, oldest + self.min_silent)
        found.sort()
        return found


