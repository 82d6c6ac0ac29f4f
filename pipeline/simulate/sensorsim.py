"""The simulated sensor network: a registry sized like a district's, readings with noise, and the overrides
that make incidents, flapping and broken sensors.

Normal readings always lie on the normal side of the sensor's clear level, so only an override can raise an
alarm, and `alarms_of` (an independent re-statement of the worker's hysteresis and debounce rule) says exactly
which reading of an override raises one. Readings are generated tick by tick (every sensor once per interval,
at its own phase), from a generator seeded by (seed, district, tick): the stream is the same on every pass and
never held in memory, so 61,000 sensors cost what one tick of them costs.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from pipeline.sensors import SensorType, Threshold
from pipeline.simulate.world import District, Spot


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


def alarms_of(values: list[float | None], th: Threshold) -> list[tuple[int, float]]:
    """(position, value) of each reading that raises an alarm, for a sensor starting normal.

    The rule (as the worker applies it): out of alarm, a reading beyond the alarm level extends a streak,
    any other reading resets it; when the streak reaches `debounce`, that reading raises the alarm. In alarm,
    only a reading back at or beyond the clear level ends it. Missing readings change nothing.
    """
    out: list[tuple[int, float]] = []
    alarm, streak = False, 0
    for i, v in enumerate(values):
        if v is None:
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
              begin: datetime, interval_s: int, ticks: int, seed: int, rng: random.Random) -> SensorNetwork:
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
                    registered=registered))
        return net

    # -- time ------------------------------------------------------------------------------------------

    def reading_time(self, sensor: SimSensor, tick: int) -> datetime:
        return self.begin + timedelta(seconds=tick * self.interval_s + sensor.phase_s)

    def tick_at_or_after(self, sensor: SimSensor, at: datetime) -> int:
        """The first tick whose reading of `sensor` is at or after `at`."""
        s = (at - self.begin).total_seconds() - sensor.phase_s
        return max(0, int(-(-s // self.interval_s)))

    # -- the registry the worker loads ------------------------------------------------------------------

    def registry_csv(self) -> str:
        """`sensor_id,sensor_type,lon,lat,category` of every registered sensor (pipeline.sensors format)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["sensor_id", "sensor_type", "lon", "lat", "category"])
        for s in self.sensors:
            if s.registered:
                w.writerow([s.sensor_id, s.sensor_type, f"{s.spot.lon:.7f}", f"{s.spot.lat:.7f}", s.category])
        return buf.getvalue()

    # -- the stream --------------------------------------------------------------------------------------

    def reading_count(self) -> int:
        total = len(self.sensors) * self.ticks
        for idx, ov in self.overrides.items():
            for tick in range(ov.first, self.ticks):
                hit, value = ov.at(tick)
                if hit and value is None:
                    total -= 1
            del idx
        return total

    def readings(self) -> Iterator[tuple[datetime, bytes, bytes]]:
        """(measured_at, key, value) of every reading, in time order."""
        order = sorted(range(len(self.sensors)), key=lambda i: (self.sensors[i].phase_s, i))
        sensors = [self.sensors[i] for i in order]
        lows = np.array([PROFILES[s.sensor_type].low for s in sensors])
        spans = np.array([PROFILES[s.sensor_type].high - PROFILES[s.sensor_type].low for s in sensors])
        decimals = [PROFILES[s.sensor_type].decimals for s in sensors]
        heads = [(f'{{"sensor_id":"{s.sensor_id}","sensor_type":"{s.sensor_type}","value":').encode()
                 for s in sensors]
        units = [f',"unit":"{s.unit}","measured_at":"'.encode() for s in sensors]
        keys = [s.sensor_id.encode() for s in sensors]
        phases = [timedelta(seconds=s.phase_s) for s in sensors]
        overridden = {pos: self.overrides[s.index] for pos, s in enumerate(sensors) if s.index in self.overrides}
        stamp = _Stamps()
        begin_epoch = int(self.begin.timestamp())
        for tick in range(self.ticks):
            gen = np.random.default_rng([self.seed, 7, tick])
            values = (lows + spans * gen.random(len(sensors))).tolist()
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
                       heads[pos] + text.encode() + units[pos] + stamp(base_epoch + s.phase_s) + b'"}')

    def rounded(self, sensor: SimSensor, value: float) -> float:
        """A value as the stream writes it (so alarms are computed on what the worker reads)."""
        d = PROFILES[sensor.sensor_type].decimals
        return round(value, d) if d else float(round(value))
