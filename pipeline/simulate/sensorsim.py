"""The simulated sensor network: a registry sized like a district's, readings with noise, and the overrides
that make incidents, flapping and broken sensors.

Normal readings always lie on the normal side of the sensor's clear level and inside its valid range, so only an
override can raise an alarm or an error, and `alarms_of` (an independent re-statement of the hysteresis and
debounce rule, docs/cases.md §6.1-§6.2) says exactly which reading of an override raises one. Two consecutive
normal readings of a sensor never repeat a value (even ticks read an even number of the type's smallest units
above its low, odd ticks an odd number), so no healthy sensor is ever "stuck" (§6.3), however sparse its readings.
Readings are generated tick by tick (every sensor once per interval, at its own phase), from a generator seeded by
(seed, tick): the stream is the same on every pass and never held in memory, so 61,000 sensors cost what one
tick of them costs.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from pipeline.simulate.spec import SCOPES, Scope, valid
from pipeline.simulate.world import District, Spot
from pipeline.stages.registry import SensorType, Threshold
from rules.durations import format_duration


@dataclass(frozen=True, slots=True)
class Profile:
    """How a sensor type reads when all is well: uniform in [low, high] (on the normal side of `clear`)."""

    weight: float
    low: float
    high: float
    decimals: int
    code: str


PROFILES: dict[str, Profile] = {
    "manhole_tilt": Profile(30, 0.0, 3.5, 1, "MT"),
    "manhole_open": Profile(5, 0.0, 0.0, 0, "MO"),
    "water_level": Profile(7, 0.0, 3.0, 1, "WL"),
    "pipe_pressure": Profile(5, 0.28, 0.45, 3, "PP"),
    "gas_concentration": Profile(4, 0.0, 3.0, 1, "GS"),
    "smoke": Profile(8, 0.0, 1.2, 2, "SM"),
    "bin_fill": Profile(15, 2.0, 28.0, 0, "BF"),
    "noise": Profile(6, 42.0, 63.0, 1, "NS"),
    "elderly_button": Profile(8, 0.0, 0.0, 0, "EB"),
    "bed_mat_inactive": Profile(6, 0.0, 25.0, 0, "BM"),
    "heritage_crack": Profile(2, 0.3, 1.4, 2, "HC"),
    "dust_pm10": Profile(4, 20.0, 95.0, 0, "DU"),
}

# Sensor types that make multi-source incidents (a citizen sees the same thing and calls).
VISIBLE_TYPES = ("pipe_pressure", "water_level", "manhole_tilt", "manhole_open", "smoke", "bin_fill")


@dataclass(frozen=True, slots=True)
class SimSensor:
    index: int
    sensor_id: str
    sensor_type: str
    unit: str
    category: str
    threshold: Threshold
    spot: Spot
    phase_s: int
    registered: bool = True
    positioned: bool = False          # an unregistered sensor whose messages carry its position (§6.1)

    @property
    def scope(self) -> Scope:
        return SCOPES[self.sensor_type]


@dataclass(frozen=True, slots=True)
class Alarm:
    """A reading that raises the sensor's alarm: its tick, value and the sensor's alarm number (1, 2, ...)."""

    tick: int
    value: float
    number: int


@dataclass
class Override:
    """Readings of one sensor that differ from its normal noise, from tick `first` on.

    `values[i]` is the reading at tick first+i; None means the sensor sent nothing. `tail` (if set) repeats
    for every later tick (a stuck or silent sensor).
    """

    first: int
    values: list[float | None]
    tail: tuple[float | None] | None = None
    why: str = ""

    def at(self, tick: int) -> tuple[bool, float | None]:
        """(overridden?, value) at `tick`."""
        i = tick - self.first
        if i < 0:
            return False, None
        if i < len(self.values):
            return True, self.values[i]
        if self.tail is not None:
            return True, self.tail[0]
        return False, None


class _Stamps:
    """`YYYY-MM-DDTHH:MM:SSZ` for epoch seconds, formatting each day's date once (strftime is slow)."""

    def __init__(self) -> None:
        self.days: dict[int, bytes] = {}

    def __call__(self, epoch: int) -> bytes:
        day, sec = divmod(epoch, 86400)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = self.days[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT").encode()
        h, rest = divmod(sec, 3600)
        return prefix + b"%02d:%02d:%02dZ" % (h, rest // 60, rest % 60)


def alarms_of(values: list[float | None], th: Threshold, sensor_type: str | None = None) -> list[tuple[int, float]]:
    """(position, value) of each reading that raises an alarm, for a sensor starting normal.

    The rule (§6.1): out of alarm, a reading beyond the alarm level extends a streak, any other reading resets
    it; when the streak reaches `debounce`, that reading raises the alarm. In alarm, only a reading back at or
    beyond the clear level ends it. Missing readings change nothing, nor do error readings (outside the valid
    range of `sensor_type`, §6.2). Re-arming (§6.1) is not modelled: the planner never leaves a sensor beyond its
    alarm level for as long as `REALARM` (`settle`).
    """
    out: list[tuple[int, float]] = []
    alarm, streak = False, 0
    for i, v in enumerate(values):
        if v is None or (sensor_type is not None and not valid(sensor_type, v)):
            continue
        beyond = v >= th.alarm if th.direction == "above" else v <= th.alarm
        normal = v <= th.clear if th.direction == "above" else v >= th.clear
        if not alarm:
            streak = streak + 1 if beyond else 0
            if streak >= th.debounce:
                alarm, streak = True, 0
                out.append((i, v))
        elif normal:
            alarm = False
    return out


@dataclass
class SensorNetwork:
    """The sensors of the simulated districts, their overrides, and the reading stream."""

    begin: datetime
    interval_s: int
    ticks: int
    seed: int
    sensors: list[SimSensor] = field(default_factory=list)
    overrides: dict[int, Override] = field(default_factory=dict)

    @classmethod
    def build(cls, districts: list[District], per_district: int, unregistered: int, types: dict[str, SensorType],
              begin: datetime, interval_s: int, ticks: int, seed: int, rng: random.Random,
              positioned: int = 0) -> SensorNetwork:
        """`per_district` registered sensors and `unregistered` unknown ones in each district; the first
        `positioned` of the unknown ones put their position in their messages."""
        net = cls(begin=begin, interval_s=interval_s, ticks=ticks, seed=seed)
        names = sorted(PROFILES)
        weights = [PROFILES[n].weight for n in names]
        for d in districts:
            counters: dict[str, int] = {}
            for k in range(per_district + unregistered):
                stype = rng.choices(names, weights)[0]
                counters[stype] = counters.get(stype, 0) + 1
                t = types[stype]
                registered = k < per_district
                sid = f"{d.code}-{PROFILES[stype].code}-{counters[stype]:05d}" + ("" if registered else "N")
                net.sensors.append(SimSensor(
                    index=len(net.sensors), sensor_id=sid, sensor_type=stype, unit=t.unit, category=t.category,
                    threshold=t.threshold, spot=d.random_spot(rng), phase_s=rng.randrange(interval_s),
                    registered=registered, positioned=not registered and k - per_district < positioned))
        return net

    # -- time ------------------------------------------------------------------------------------------

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.interval_s)

    @property
    def end(self) -> datetime:
        return self.begin + timedelta(seconds=self.ticks * self.interval_s)

    def reading_time(self, sensor: SimSensor, tick: int) -> datetime:
        return self.begin + timedelta(seconds=tick * self.interval_s + sensor.phase_s)

    def tick_at_or_after(self, sensor: SimSensor, at: datetime) -> int:
        """The first tick whose reading of `sensor` is at or after `at`."""
        s = (at - self.begin).total_seconds() - sensor.phase_s
        return max(0, int(-(-s // self.interval_s)))

    # -- the registry the worker loads ------------------------------------------------------------------

    def registry_csv(self, silent: timedelta | None = None) -> str:
        """`sensor_id,sensor_type,lon,lat,category` of every registered sensor (pipeline.stages.sensors format), and a
        `silent` column (a duration, `4d`) when the readings are too sparse for the types' default (§6.3)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["sensor_id", "sensor_type", "lon", "lat", "category"] + (["silent"] if silent else []))
        extra = [format_duration(silent)] if silent else []
        for s in self.sensors:
            if s.registered:
                w.writerow([s.sensor_id, s.sensor_type, f"{s.spot.lon:.7f}", f"{s.spot.lat:.7f}", s.category,
                            *extra])
        return buf.getvalue()

    # -- the stream --------------------------------------------------------------------------------------

    def readings_of(self, sensor: SimSensor) -> int:
        """How many readings `sensor` sends over the period."""
        ov = self.overrides.get(sensor.index)
        if ov is None:
            return self.ticks
        return self.ticks - sum(1 for tick in range(ov.first, self.ticks) if ov.at(tick) == (True, None))

    def reading_count(self) -> int:
        return len(self.sensors) * self.ticks - sum(
            self.ticks - self.readings_of(self.sensors[i]) for i in self.overrides)

    def normal(self, sensor: SimSensor, tick: int, rng: random.Random) -> float:
        """A normal reading of `sensor` for `tick` (of that tick's parity, as the stream's own readings are)."""
        p = PROFILES[sensor.sensor_type]
        scale = 10.0 ** p.decimals
        units = round((p.high - p.low) * scale) + 1
        count = (units + 1 - tick % 2) // 2
        k = tick % 2 + 2 * rng.randrange(count) if count else 0
        return round(p.low + k / scale, p.decimals)

    def readings(self) -> Iterator[tuple[datetime, bytes, bytes]]:
        """(measured_at, key, value) of every reading, in time order."""
        order = sorted(range(len(self.sensors)), key=lambda i: (self.sensors[i].phase_s, i))
        sensors = [self.sensors[i] for i in order]
        profiles = [PROFILES[s.sensor_type] for s in sensors]
        lows = np.array([p.low for p in profiles])
        scales = np.array([10.0 ** p.decimals for p in profiles])
        units = np.array([round((p.high - p.low) * 10 ** p.decimals) + 1 for p in profiles])
        # how many values of each parity a sensor can read: k = parity + 2 * (0 .. count - 1)
        counts = ((units + 1) // 2, units // 2)
        decimals = [p.decimals for p in profiles]
        heads = [(f'{{"sensor_id":"{s.sensor_id}","sensor_type":"{s.sensor_type}","value":').encode()
                 for s in sensors]
        where = [f',"lon":{s.spot.lon},"lat":{s.spot.lat}' if s.positioned else "" for s in sensors]
        units_text = [f'{w},"unit":"{s.unit}","measured_at":"'.encode() for s, w in zip(sensors, where, strict=True)]
        keys = [s.sensor_id.encode() for s in sensors]
        phases = [timedelta(seconds=s.phase_s) for s in sensors]
        overridden = {pos: self.overrides[s.index] for pos, s in enumerate(sensors) if s.index in self.overrides}
        stamp = _Stamps()
        begin_epoch = int(self.begin.timestamp())
        for tick in range(self.ticks):
            gen = np.random.default_rng([self.seed, 7, tick])
            parity = tick % 2
            count = counts[parity]
            k = np.where(count > 0, parity + 2 * np.floor(gen.random(len(sensors)) * count), 0)
            values = (lows + k / scales).tolist()
            base = self.begin + timedelta(seconds=tick * self.interval_s)
            base_epoch = begin_epoch + tick * self.interval_s
            for pos, s in enumerate(sensors):
                value: float | None = values[pos]
                ov = overridden.get(pos)
                if ov is not None:
                    hit, forced = ov.at(tick)
                    if hit:
                        value = forced
                if value is None:
                    continue
                d = decimals[pos]
                # the shortest form, as a JSON encoder writes it, so a recording replays byte for byte
                text = repr(round(value, d)) if d else str(round(value))
                yield (base + phases[pos], keys[pos],
                       heads[pos] + text.encode() + units_text[pos] + stamp(base_epoch + s.phase_s) + b'"}')

    def rounded(self, sensor: SimSensor, value: float) -> float:
        """A value as the stream writes it (so alarms are computed on what the worker reads)."""
        d = PROFILES[sensor.sensor_type].decimals
        return round(value, d) if d else float(round(value))
