"""What a sensor reads when something happens to it: a real threshold crossing, flapping around its alarm level, or
a breakdown (stuck, silent, sending error codes), and the device fault a breakdown must raise (docs/cases.md §6).

Every override keeps the readings valid (§6.2) unless it means to send error codes, never repeats a value on two
consecutive readings unless it means to be stuck, and brings an alarmed sensor back to normal well before it
would re-arm (§6.1: `REALARM`), so each alarm of the plan is exactly one report and nothing else is raised.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from pipeline.simulate.lifecycle import MARGIN
from pipeline.simulate.model import Fault
from pipeline.simulate.sensorsim import Override, SensorNetwork, SimSensor, alarms_of
from pipeline.simulate.spec import (
    ERROR_AFTER,
    REALARM,
    STUCK_AFTER,
    STUCK_READINGS,
    VALID,
    FaultKind,
    silent_after,
)


def in_alarm_ticks(net: SensorNetwork) -> int:
    """How many readings after its alarm a sensor may still be out of normal: it must be back well before
    `REALARM` (at a reading a day, none)."""
    return max(0, math.floor((REALARM - MARGIN) / net.interval) - 1)


def _beyond(net: SensorNetwork, sensor: SimSensor, rng: random.Random, previous: float | None) -> float:
    """A valid reading beyond the alarm level, not equal to `previous` (unless the type has one such value)."""
    th = sensor.threshold
    if th.alarm == 1 and th.clear == 0:
        return 1.0
    for _ in range(10):
        if th.direction == "above":
            top = min(th.alarm * 1.9, VALID[sensor.sensor_type][1])
            v = net.rounded(sensor, rng.uniform(th.alarm + (top - th.alarm) * 0.1, top))
            v = max(v, th.alarm)
        else:
            v = net.rounded(sensor, th.alarm * rng.uniform(0.2, 0.8))
        if v != previous:
            return v
    return v


def incident_values(net: SensorNetwork, sensor: SimSensor, at: datetime, rng: random.Random) -> Override | None:
    """A real crossing from the first reading at or after `at`: beyond the alarm level for the debounce count
    (and a few more readings while the sensor is still early in its alarm), then back to normal. None when the
    period ends first."""
    th = sensor.threshold
    first = net.tick_at_or_after(sensor, at)
    room = in_alarm_ticks(net)
    n_beyond = th.debounce + rng.randint(min(1, room), min(6, room))
    if first + n_beyond + 2 > net.ticks:
        return None
    values: list[float | None] = []
    previous: float | None = None
    for _ in range(n_beyond):
        previous = _beyond(net, sensor, rng, previous)
        values.append(previous)
    values.append(net.normal(sensor, first + n_beyond, rng))
    return Override(first, values, why="incident")


def flapping_values(net: SensorNetwork, sensor: SimSensor, rng: random.Random) -> Override:
    """An hour or two of readings around the alarm level: hysteresis and debounce make at most one alarm, and an
    alarmed sensor is back to normal within `in_alarm_ticks`."""
    th = sensor.threshold
    n = rng.randint(6, 10)
    first = rng.randrange(max(1, net.ticks - n - 1))
    lo, hi = sorted((th.clear, th.alarm))
    top = VALID[sensor.sensor_type][1]
    values: list[float | None] = []
    for _ in range(n):
        for _ in range(10):
            beyond = rng.random() < 0.6
            if th.direction == "above":
                v = min(th.alarm * rng.uniform(1.0, 1.15), top) if beyond else lo + (hi - lo) * rng.uniform(0.3, 0.9)
            else:
                v = th.alarm * rng.uniform(0.85, 1.0) if beyond else lo + (hi - lo) * rng.uniform(0.1, 0.7)
            v = net.rounded(sensor, v)
            if not values or v != values[-1]:
                break
        values.append(v)
    alarms = alarms_of(values, th, sensor.sensor_type)
    if alarms:
        values = values[:alarms[0][0] + 1 + in_alarm_ticks(net)]
    values.append(net.normal(sensor, first + len(values), rng))
    return Override(first, values, why="flapping")


def quiet_values(net: SensorNetwork, sensor: SimSensor, first: int, rng: random.Random) -> Override:
    """A flapping sensor whose alarm found no room in the plan: one normal reading instead."""
    return Override(first, [net.normal(sensor, first, rng)], why="flapping")


def _error_codes(sensor_type: str) -> tuple[float, float]:
    """Two codes a gateway sends for a broken sensor, both outside the type's valid range: they alternate, so
    an error episode is never also "the same value for hours"."""
    high = VALID[sensor_type][1]
    return -1.0, 9999.0 if high < 9999.0 else 99999.0


def fault_ticks(net: SensorNetwork, mode: FaultKind) -> int:
    """Readings (or, for a silence, reading intervals) from the breakdown to the fault (§6.3)."""
    if mode == "error":
        return ERROR_AFTER - 1
    if mode == "stuck":
        return max(STUCK_READINGS - 1, math.ceil(STUCK_AFTER / net.interval))
    return math.ceil(silent_after(net.interval) / net.interval)


def broken_values(net: SensorNetwork, sensor: SimSensor, mode: FaultKind, start: int,
                  rng: random.Random) -> Override:
    """From tick `start` to the end: one value over and over (stuck), nothing (silent), error codes (error)."""
    if mode == "silent":
        return Override(start, [], tail=(None,), why="broken:silent")
    if mode == "error":
        a, b = _error_codes(sensor.sensor_type)
        return Override(start, [a if k % 2 == 0 else b for k in range(net.ticks - start)], why="broken:error")
    # the stuck value has the parity of `start`, so the reading before it (a normal one) differs: the stuck
    # stretch starts exactly at `start`
    return Override(start, [], tail=(net.normal(sensor, start, rng),), why="broken:stuck")


def fault_of(net: SensorNetwork, sensor: SimSensor, mode: FaultKind, start: int) -> Fault | None:
    """The fault a sensor broken at tick `start` raises (§6.3), or None when the period ends first.

    error: at its `ERROR_AFTER`-th error reading; stuck: at the first reading that has had the same value for
    `STUCK_AFTER` and `STUCK_READINGS` readings; silent: `silent_after` after its last reading, which only a
    clock moved by later readings (the ingest partition's) can tell: when that is within the last reading
    interval of the period the truth cannot say whether the worker's clock gets there (`certain` False).
    """
    if mode == "silent":
        at = net.reading_time(sensor, start - 1) + silent_after(net.interval)
        if at >= net.end:
            return None
        return Fault("silent", at, at <= net.end - net.interval - timedelta(minutes=1))
    tick = start + fault_ticks(net, mode)
    if tick >= net.ticks:
        return None
    return Fault(mode, net.reading_time(sensor, tick), True)
