"""Independent readings of docs/cases.md for the simulator's tests: what the specification says happens to a stream
of sensor readings (alarms, re-arming, device faults) and whether two planned incidents would merge.

Written from the specification's text, not from the planner: the planner keeps incidents apart with zones and
builds readings from overrides; these functions only look at the results (reports, closing times, the message
stream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from pipeline.simulate.model import Incident
from pipeline.simulate.spec import ERROR_AFTER, NEVER_STUCK, REALARM, STUCK_AFTER, STUCK_READINGS, VALID, family
from pipeline.simulate.world import metres

SKEW = timedelta(minutes=1)      # reports are processed in time order, up to this much


def would_join(report_at: datetime, lon: float, lat: float, case: Incident) -> bool:
    """§2: a report (neither a person's alarm nor about another case's person) joins `case` of its category in
    its book when it is made while the case exists (processed after its first report) and before it is closed,
    within the family's radius of the case's place."""
    if case.first.at - SKEW > report_at:
        return False
    if case.closed_at is not None and report_at >= case.closed_at:
        return False
    return metres(lon, lat, case.spot.lon, case.spot.lat) <= family(case.category).radius_m


def merges(a: Incident, b: Incident) -> list[str]:
    """The reports of `b` that would join `a`'s case (empty when the two stay apart)."""
    if a.spot.book != b.spot.book or a.category != b.category or "person" in (a.scope, b.scope):
        return []
    return [r.event_id for r in b.reports
            if r.lon is not None and r.lat is not None and would_join(r.at, r.lon, r.lat, a)]


@dataclass
class SensorTrace:
    """One sensor's readings as the specification reads them (§6.1-§6.3)."""

    sensor_type: str
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def traces(messages: Iterable[object], types: dict[str, str]) -> dict[str, SensorTrace]:
    """Every well-formed reading of the sensors `types` names (sensor id -> type), per sensor, in time order
    (malformed ones, a wrong type included, are dead letters, not readings)."""
    out: dict[str, SensorTrace] = {}
    for m in messages:
        if getattr(m, "topic", "") != "raw_iot":
            continue
        try:
            obj = orjson.loads(m.value)      # type: ignore[attr-defined]
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("value"), int | float) \
                or not isinstance(obj.get("measured_at"), str) or types.get(obj.get("sensor_id")) is None \
                or obj.get("sensor_type") != types[obj["sensor_id"]]:
            continue
        t = out.setdefault(obj["sensor_id"], SensorTrace(obj["sensor_type"]))
        t.times.append(datetime.fromisoformat(obj["measured_at"].replace("Z", "+00:00")))
        t.values.append(float(obj["value"]))
    return out


def faults(trace: SensorTrace, silent: timedelta, clock_end: datetime) -> list[tuple[str, datetime]]:
    """(kind, time) of each device fault (§6.3) of a sensor's readings: `error_after` consecutive error
    readings; the same valid value for `STUCK_AFTER` and `STUCK_READINGS` readings (never for the binary and
    the gas and smoke types); no reading for `silent` while the clock (`clock_end` at most) moves on. One fault
    per episode; an episode ends with a valid, changing reading (any reading, for a silence)."""
    lo, hi = VALID[trace.sensor_type]
    out: list[tuple[str, datetime]] = []
    errors = 0
    run_start: datetime | None = None
    run_value: float | None = None
    run_n = 0
    in_error = in_stuck = False
    for k, (at, v) in enumerate(zip(trace.times, trace.values, strict=True)):
        if k and at - trace.times[k - 1] >= silent:
            out.append(("silent", trace.times[k - 1] + silent))
        if not lo <= v <= hi:
            errors += 1
            if errors >= ERROR_AFTER and not in_error:
                in_error = True
                out.append(("error", at))
            continue
        errors = 0
        if v == run_value:
            run_n += 1
        else:
            run_start, run_value, run_n = at, v, 1
            in_error = in_stuck = False
        assert run_start is not None
        if (trace.sensor_type not in NEVER_STUCK and not in_stuck and at - run_start >= STUCK_AFTER
                and run_n >= STUCK_READINGS):
            in_stuck = True
            out.append(("stuck", at))
    if trace.times and clock_end - trace.times[-1] >= silent:
        out.append(("silent", trace.times[-1] + silent))
    return out


def realarms(trace: SensorTrace, alarm: float, clear: float, direction: str, debounce: int) -> list[datetime]:
    """Readings still beyond the alarm level `REALARM` or more after the sensor's alarm (§6.1 would alarm again:
    the plan must never leave a sensor there)."""
    lo, hi = VALID[trace.sensor_type]
    out: list[datetime] = []
    alarmed: datetime | None = None
    streak = 0
    for at, v in zip(trace.times, trace.values, strict=True):
        if not lo <= v <= hi:
            continue
        beyond = v >= alarm if direction == "above" else v <= alarm
        normal = v <= clear if direction == "above" else v >= clear
        if alarmed is None:
            streak = streak + 1 if beyond else 0
            if streak >= debounce:
                alarmed, streak = at, 0
        elif normal:
            alarmed = None
        elif beyond and at - alarmed >= REALARM:
            out.append(at)
    return out
