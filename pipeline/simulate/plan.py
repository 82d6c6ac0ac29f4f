"""Planning the simulated days: which problems happen where and when, who reports them, how teams respond.

Incidents are planned in the time order of their first report. Each is placed (a spot in a cell), routed
with the project's own rules exactly as the worker will route it (the same first event, the same recurrence
history), and given a feedback timeline. Two incidents of one category are never placed where the worker's
correlation (pipeline.cases.CorrelationPolicy: radius, window, reopen window, per book) could merge them, so
each incident is exactly one case, except the chronic hot spots, whose repeats are new cases on purpose
(each comes after the correlation window of the last, while that case is still open).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from pipeline.cases import CorrelationPolicy, case_id_for
from pipeline.decode import Decoder
from pipeline.model import Event
from pipeline.simulate.catalog import (
    CHANNELS,
    FEEDBACK_NOTES,
    HOTLINE_MIX,
    HOTSPOT_CATEGORIES,
    HOURLY_CURVE,
    PATROL_MIX,
    PATROL_NOTES,
    REQUEST_TYPES,
    Weighted,
    description_for,
)
from pipeline.simulate.config import SHANGHAI, SimConfig
from pipeline.simulate.model import Action, Hotspot, Incident, Report, Round
from pipeline.simulate.people import CallerBook, staff_id
from pipeline.simulate.sensorsim import VISIBLE_TYPES, Override, SensorNetwork, SimSensor, alarms_of
from pipeline.simulate.world import District, Spot, World, metres, offset
from rules.recurrence import RecurrenceHistory

MARGIN = timedelta(minutes=15)        # kept between a boundary of the correlation rules and any planned time
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=SHANGHAI)
HOTSPOT_TIMES = (7 * 60 + 20, 12 * 60 + 20, 17 * 60 + 20, 22 * 60 + 20)   # local minutes; 5 h apart


@dataclass(frozen=True, slots=True)
class Seed:
    """An incident to plan: when its first report is due and what kind it is."""

    at: datetime
    seq: int
    district: str
    kind: str
    extra: Any = None


@dataclass(frozen=True, slots=True)
class Block:
    """A zone where another incident of `category` in book `key` would be merged by the worker."""

    key: str
    category: str
    lon: float
    lat: float
    start: datetime
    end: datetime
    owner: str


class Exclusion:
    """Placed incidents' correlation zones, to keep new incidents out of them.

    Incidents are planned in time order, so most zones end long before the incidents still to come start:
    `retire` moves those out of the lists `free` scans. They are still consulted by a question about an earlier
    time (the flapping sensors, planned last, at any time of the period), so the answers do not depend on when
    or whether `retire` was called; only the work does (without it, a month's scans grow with the square of
    the days).
    """

    def __init__(self, policy: CorrelationPolicy) -> None:
        self.policy = policy
        self.blocks: dict[tuple[str, str], list[Block]] = {}
        self.retired: dict[tuple[str, str], list[Block]] = {}
        self.horizon: datetime | None = None     # every retired block ends before this

    def reach(self, category: str) -> float:
        # both incidents' reports scatter up to a third of the radius around their case points
        radius, _ = self.policy.for_category(category)
        return radius * 5 / 3 + 20.0

    def free(self, key: str, category: str, lon: float, lat: float, start: datetime, end: datetime,
             owner: str = "") -> bool:
        reach = self.reach(category)
        blocks = self.blocks.get((key, category), ())
        if self.horizon is not None and start < self.horizon:
            blocks = [*blocks, *self.retired.get((key, category), ())]
        for b in blocks:
            if b.owner and b.owner == owner:
                continue
            if b.start <= end and start <= b.end and metres(lon, lat, b.lon, b.lat) < reach:
                return False
        return True

    def add(self, block: Block) -> None:
        self.blocks.setdefault((block.key, block.category), []).append(block)

    def retire(self, before: datetime) -> None:
        """Set aside the zones that end before `before` (a time no later than any question still to come)."""
        if self.horizon is not None and before <= self.horizon:
            return
        for book, blocks in self.blocks.items():
            if any(b.end < before for b in blocks):
                self.retired.setdefault(book, []).extend(b for b in blocks if b.end < before)
                blocks[:] = [b for b in blocks if b.end >= before]
        self.horizon = before


class Planner:
    """Turns a config into incidents, hot spots, sensor overrides and the unlocated tickets."""

    def __init__(self, config: SimConfig, world: World, network: SensorNetwork, rng: random.Random,
                 decoder: Decoder, callers: CallerBook) -> None:
        self.config = config
        self.world = world
        self.net = network
        self.rng = rng
        self.decoder = decoder
        self.callers = callers
        self.policy = CorrelationPolicy()
        self.exclusion = Exclusion(self.policy)
        self.history = RecurrenceHistory()
        self.incidents: list[Incident] = []
        self.hotspots: list[Hotspot] = []
        self.unlocated: list[Report] = []
        self.dropped = 0                 # incidents that found no free place (a very dense configuration)
        self.used_sensors: set[int] = set()
        self.hotline_mix = Weighted(HOTLINE_MIX)
        self.patrol_mix = Weighted(PATROL_MIX)
        self.request_types = Weighted(REQUEST_TYPES)
        self.channels = Weighted(CHANNELS)
        self._ids: dict[str, int] = {}
        self._pools: dict[tuple[str, bool], list[SimSensor]] = {}
        self.end = config.end

    # -- ids and times -----------------------------------------------------------------------------------

    def _next(self, prefix: str) -> int:
        self._ids[prefix] = self._ids.get(prefix, 0) + 1
        return self._ids[prefix]

    def _local(self, at: datetime) -> str:
        return _local_iso(at)

    def _ticket_id(self, at: datetime) -> str:
        return f"{_local_day(at)}{self._next('ticket'):06d}"

    def curve_time(self, day_start: datetime) -> datetime:
        """A time in the local day starting at `day_start`, drawn from the hotline's daily curve."""
        hour = self.rng.choices(range(24), HOURLY_CURVE)[0]
        return day_start + timedelta(hours=hour, seconds=self.rng.randrange(3600))

    # -- seeds -------------------------------------------------------------------------------------------

    def seeds(self) -> list[Seed]:
        cfg = self.config
        out: list[Seed] = []
        begin, end = cfg.begin, cfg.end
        day = begin.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
        days: list[datetime] = []
        while day < end:
            days.append(day)
            day = (day + timedelta(days=1, hours=3)).replace(hour=0)
        for code in cfg.districts:
            district = self.world.districts[code]
            per_day = cfg.hotline_per_day.get(code, 0)
            n_sensors = len([s for s in self.net.sensors if s.spot.cell.startswith(code) and s.registered])
            for d0 in days:
                for _ in range(per_day):
                    out.append(Seed(self.curve_time(d0), 0, code, "hotline"))
                for _ in range(cfg.multi_source_per_day):
                    out.append(Seed(self.curve_time(d0), 0, code, "multi"))
                for _ in range(round(cfg.sensor_incidents_per_1000 * n_sensors / 1000)):
                    out.append(Seed(d0 + timedelta(seconds=self.rng.randrange(86400)), 0, code, "sensor"))
                out += self._patrol_seeds(district, d0)
            for k in range(cfg.hotspots):
                spot = self._hotspot(district, k)
                if spot is None:
                    continue
                for d0 in days:
                    for minute in HOTSPOT_TIMES:
                        at = d0 + timedelta(minutes=minute + self.rng.randrange(-10, 11))
                        out.append(Seed(at, 0, code, "hotspot", spot))
        out = [s for s in out if begin <= s.at < end]
        out.sort(key=lambda s: (s.at, s.district, s.kind))
        return [replace(s, seq=i) for i, s in enumerate(out)]

    def _patrol_seeds(self, district: District, day: datetime) -> list[Seed]:
        """Each sub-district's patrol teams walk a route of neighbouring cells in two shifts a day."""
        out: list[Seed] = []
        for sub, cells in sorted(district.by_subdistrict.items()):
            by_square = {(c.col, c.row): c for c in cells}
            for team_no in range(1, self.config.patrol_teams_per_subdistrict + 1):
                for shift_start in (7, 15):
                    cell = self.rng.choice(cells)
                    route = [cell]
                    for _ in range(60):
                        steps = [(cell.col + dc, cell.row + dr) for dc, dr in ((1, 0), (-1, 0), (0, 1), (0, -1))]
                        nxt = [by_square[s] for s in steps if s in by_square]
                        if nxt:
                            cell = self.rng.choice(nxt)
                            route.append(cell)
                    start = day + timedelta(hours=shift_start)
                    n = self.config.patrol_reports_per_shift
                    offsets = sorted(self.rng.randrange(8 * 3600) for _ in range(n))
                    team = f"patrol-{sub}-{team_no}"
                    members = [f"XC{self.rng.randrange(1, 900):04d}" for _ in range(3)]
                    for off in offsets:
                        pos = min(len(route) - 1, off * len(route) // (8 * 3600))
                        out.append(Seed(start + timedelta(seconds=off), 0, district.code, "patrol",
                                        (team, members, route, pos)))
        return out

    def _hotspot(self, district: District, k: int) -> Spot | None:
        category = HOTSPOT_CATEGORIES[k % len(HOTSPOT_CATEGORIES)]
        for _ in range(50):
            spot = district.random_spot(self.rng, street=True)
            if self.exclusion.free(spot.key, category, spot.lon, spot.lat, self.config.begin, FAR_FUTURE):
                hid = f"H{district.code}-{k + 1:02d}"
                self.exclusion.add(Block(spot.key, category, spot.lon, spot.lat, self.config.begin - timedelta(days=1),
                                         FAR_FUTURE, hid))
                self.hotspots.append(Hotspot(hid, district.code, category, spot))
                return spot
        return None

    # -- planning ----------------------------------------------------------------------------------------

    def plan(self) -> None:
        policy = self.policy
        longest = timedelta(hours=max(policy.default_window_h, *(h for _, h in policy.families.values())))
        hour: datetime | None = None
        for seed in self.seeds():
            if hour is None or seed.at >= hour + timedelta(hours=6):
                # no incident from here on asks about a time before its first report's window
                hour = seed.at
                self.exclusion.retire(seed.at - longest - MARGIN)
            district = self.world.districts[seed.district]
            if seed.kind == "hotline":
                self._hotline(district, seed)
            elif seed.kind == "patrol":
                self._patrol(district, seed)
            elif seed.kind == "sensor":
                self._sensor(district, seed, multi=False)
            elif seed.kind == "multi":
                self._sensor(district, seed, multi=True)
            elif seed.kind == "hotspot":
                self._hotspot_occurrence(district, seed)
        self._flapping_and_broken()

    def _hotline(self, district: District, seed: Seed) -> None:
        rng = self.rng
        category = self.hotline_mix.draw(rng)
        radius, window = self.policy.for_category(category)
        address_only = rng.random() < self.config.address_only_share
        if address_only and rng.random() < self.config.unresolvable_share and district.unresolvable:
            self.unlocated.append(self._ticket(seed.at, category, None, rng.choice(district.unresolvable)))
            return
        for _ in range(25):
            text: str | None = None
            if address_only:
                addr = rng.choice(district.addresses)
                spot, text = addr.spot, addr.text
            else:
                spot = district.random_spot(rng, street=category.startswith("E05"))
            if not self._may_place(spot, category, seed.at):
                continue
            mark = self.callers.mark()
            first = self._ticket(seed.at, category, spot if text is None else None, text)
            reports = [first]
            t = seed.at
            if rng.random() < 0.12:            # neighbours call about the same problem
                for _ in range(rng.randint(1, 3)):
                    t = t + timedelta(minutes=rng.randint(5, min(120, int(window.total_seconds() // 120))))
                    near: Spot | None = spot if text is not None else self._near(spot, radius)
                    if near is None:
                        break
                    reports.append(self._ticket(t, category, near if text is None else None, text))
            if rng.random() < 0.05 and not category.startswith("P"):
                t = t + timedelta(minutes=rng.randint(30, min(180, int(window.total_seconds() // 120))))
                confirm = self._near(spot, radius)
                if confirm is not None:
                    reports.append(self._patrol_report(t, category, confirm, *self._district_patrol(spot)))
            if self._place(district, "hotline", category, spot, reports):
                return
            self.callers.forget(mark)
        self.dropped += 1

    def _patrol(self, district: District, seed: Seed) -> None:
        team, members, route, pos = seed.extra
        rng = self.rng
        category = self.patrol_mix.draw(rng)
        radius, window = self.policy.for_category(category)
        for attempt in range(12):
            cell = route[min(len(route) - 1, pos + attempt)]
            spot = district.spot_in(cell, rng)
            if not self._may_place(spot, category, seed.at):
                continue
            mark = self.callers.mark()
            reports = [self._patrol_report(seed.at, category, spot, team, members)]
            if rng.random() < 0.08:            # a citizen calls later about what the patrol found
                t = seed.at + timedelta(minutes=rng.randint(20, min(200, int(window.total_seconds() // 120))))
                near = self._near(spot, radius)
                if near is not None:
                    reports.append(self._ticket(t, category, near, None))
            if self._place(district, "patrol", category, spot, reports):
                return
            self.callers.forget(mark)
        self.dropped += 1

    def _sensor(self, district: District, seed: Seed, multi: bool) -> None:
        """A real threshold crossing; `multi`: a visible one, then citizens call and a patrol confirms."""
        rng = self.rng
        candidates = self._pool(district.code, multi)
        for _ in range(25):
            if not candidates:
                break
            sensor = rng.choice(candidates)
            override = self._incident_values(sensor, seed.at)
            if override is None:
                continue
            alarms = alarms_of(override.values, sensor.threshold)
            assert len(alarms) == 1, f"incident profile of {sensor.sensor_id} raises {len(alarms)} alarms"
            pos, value = alarms[0]
            at = self.net.reading_time(sensor, override.first + pos)
            if at >= self.config.end or not self._may_place(sensor.spot, sensor.category, at):
                continue
            mark = self.callers.mark()
            first = Report("iot", at, f"iot:{sensor.sensor_id}:alarm1", sensor.sensor_id, sensor.spot.lon,
                           sensor.spot.lat, None)
            reports = [first]
            if multi:
                radius, _ = self.policy.for_category(sensor.category)
                t = at
                for _ in range(rng.randint(1, 3)):
                    t = t + timedelta(minutes=rng.randint(10, 35))
                    near = self._near(sensor.spot, radius)
                    if near is not None:
                        reports.append(self._ticket(t, sensor.category, near, None, with_coordinates=True))
                near = self._near(sensor.spot, radius)
                if near is not None:
                    t = t + timedelta(minutes=rng.randint(25, 80))
                    reports.append(self._patrol_report(t, sensor.category, near, *self._district_patrol(near)))
            if self._place(district, "multi" if multi else "sensor", sensor.category, sensor.spot, reports,
                           sensor=sensor, alarm_value=value):
                self._use(sensor)
                self.net.overrides[sensor.index] = override
                return
            self.callers.forget(mark)
        self.dropped += 1

    def _pool(self, code: str, multi: bool) -> list[SimSensor]:
        """The registered sensors of district `code` not yet used (only visible types for `multi`), in registry
        order: kept up to date by `_use` rather than filtered from all sensors for every incident."""
        pool = self._pools.get((code, multi))
        if pool is None:
            pool = self._pools[(code, multi)] = [
                s for s in self.net.sensors if s.registered and s.spot.cell.startswith(code)
                and s.index not in self.used_sensors and (not multi or s.sensor_type in VISIBLE_TYPES)]
        return pool

    def _use(self, sensor: SimSensor) -> None:
        """Mark `sensor` as taken by an incident, a flapping or a broken profile (at most one each)."""
        self.used_sensors.add(sensor.index)
        for pool in self._pools.values():
            i = bisect_left(pool, sensor.index, key=lambda s: s.index)
            if i < len(pool) and pool[i] is sensor:
                del pool[i]

    def _incident_values(self, sensor: SimSensor, at: datetime) -> Override | None:
        """Readings of a real incident from the first tick at or after `at`: beyond the alarm level for a
        while (at least the debounce count), then back to normal."""
        rng, th = self.rng, sensor.threshold
        first = self.net.tick_at_or_after(sensor, at)
        n_beyond = th.debounce + rng.randint(1, 6)
        if first + n_beyond + 2 > self.net.ticks:
            return None
        values: list[float | None] = []
        for _ in range(n_beyond):
            if th.direction == "above":
                v = 1.0 if th.alarm == 1 and th.clear == 0 else th.alarm * rng.uniform(1.1, 1.9)
            else:
                v = th.alarm * rng.uniform(0.2, 0.8)
            values.append(self.net.rounded(sensor, v))
        values.append(self.net.rounded(sensor, _normal(sensor, rng)))
        return Override(first, values, why="incident")

    def _hotspot_occurrence(self, district: District, seed: Seed) -> None:
        spot: Spot = seed.extra
        hot = next(h for h in self.hotspots if h.spot is spot)
        rng = self.rng
        mark = self.callers.mark()
        near = self._near(spot, 45.0) or spot
        if rng.random() < 0.5:
            first = self._ticket(seed.at, hot.category, near, None, with_coordinates=True)
        else:
            first = self._patrol_report(seed.at, hot.category, near, *self._district_patrol(spot))
        reports = [first]
        if rng.random() < 0.4:
            t = seed.at + timedelta(minutes=rng.randint(5, 25))
            second = self._near(spot, 45.0)
            if second is not None:
                reports.append(self._ticket(t, hot.category, second, None, with_coordinates=True))
        incident = self._place(district, "hotspot", hot.category, near, reports, hotspot=hot.hotspot_id)
        if incident is None:
            self.callers.forget(mark)
            self.dropped += 1
            return
        hot.incidents.append(incident.incident_id)

    def _flapping_and_broken(self) -> None:
        """Sensors that flap around their alarm level, and broken ones (stuck, silent, sending error codes)."""
        rng, cfg = self.rng, self.config
        for code in cfg.districts:
            district = self.world.districts[code]
            pool = [s for s in self.net.sensors if s.registered and s.spot.cell.startswith(code)
                    and s.index not in self.used_sensors and not (s.threshold.alarm == 1 and s.threshold.clear == 0)]
            rng.shuffle(pool)
            for sensor in pool[:cfg.flapping_sensors]:
                self._flapping(district, sensor)
            for k, sensor in enumerate(pool[cfg.flapping_sensors:cfg.flapping_sensors + cfg.broken_sensors]):
                start = rng.randrange(max(1, self.net.ticks))
                self._use(sensor)
                mode = ("stuck", "silent", "error")[k % 3]
                if mode == "error" and sensor.threshold.direction != "above":
                    mode = "stuck"
                value: float | None = {"stuck": self.net.rounded(sensor, _normal(sensor, rng)), "silent": None,
                                       "error": -1.0}[mode]
                self.net.overrides[sensor.index] = Override(start, [], tail=(value,), why=f"broken:{mode}")

    def _flapping(self, district: District, sensor: SimSensor) -> None:
        """An hour or two of readings around the alarm level: hysteresis and debounce make at most one alarm."""
        rng, th = self.rng, sensor.threshold
        n = rng.randint(6, 10)
        first = rng.randrange(max(1, self.net.ticks - n - 1))
        lo, hi = sorted((th.clear, th.alarm))
        values: list[float | None] = []
        for _ in range(n):
            beyond = rng.random() < 0.6
            if th.direction == "above":
                v = th.alarm * rng.uniform(1.0, 1.15) if beyond else lo + (hi - lo) * rng.uniform(0.3, 0.9)
            else:
                v = th.alarm * rng.uniform(0.85, 1.0) if beyond else lo + (hi - lo) * rng.uniform(0.1, 0.7)
            values.append(self.net.rounded(sensor, v))
        values.append(self.net.rounded(sensor, _normal(sensor, rng)))
        override = Override(first, values, why="flapping")
        alarms = alarms_of(values, th)
        self._use(sensor)
        if not alarms:
            self.net.overrides[sensor.index] = override
            return
        pos, value = alarms[0]
        at = self.net.reading_time(sensor, first + pos)
        first_report = Report("iot", at, f"iot:{sensor.sensor_id}:alarm1", sensor.sensor_id, sensor.spot.lon,
                              sensor.spot.lat, None)
        if at < self.config.end and self._place(district, "flapping", sensor.category, sensor.spot,
                                                [first_report], sensor=sensor, alarm_value=value):
            self.net.overrides[sensor.index] = override
        else:
            # no room for its alarm: it flaps without ever reaching the debounce count instead
            self.net.overrides[sensor.index] = Override(first, [self.net.rounded(sensor, _normal(sensor, rng))],
                                                        why="flapping")

    # -- reports -----------------------------------------------------------------------------------------

    def _may_place(self, spot: Spot, category: str, first_at: datetime) -> bool:
        """False when an incident first reported at `first_at` cannot be placed at `spot`: the zone `_place`
        checks always includes this one, so an attempt that fails here is skipped before its reports are made
        (most attempts of a month's busy categories; drawing their reports was most of the planning time)."""
        _, window = self.policy.for_category(category)
        return self.exclusion.free(spot.key, category, spot.lon, spot.lat, first_at - window - MARGIN,
                                   first_at + window + MARGIN)

    def _near(self, spot: Spot, radius: float) -> Spot | None:
        """A point within a third of `radius` of `spot`, in the same management grid (so the same case book)."""
        for _ in range(10):
            lon, lat = offset(spot.lon, spot.lat, radius / 3, self.rng)
            other = self.world.locate(lon, lat)
            if other is not None and other.key == spot.key:
                return other
        return None

    def _district_patrol(self, spot: Spot) -> tuple[str, list[str]]:
        return f"patrol-{spot.subdistrict}-1", [f"XC{self.rng.randrange(1, 900):04d}"]

    def _ticket(self, at: datetime, category: str, spot: Spot | None, address: str | None,
                with_coordinates: bool = False) -> Report:
        """A 12345 ticket: with coordinates (`spot`) or with only an address (`address`)."""
        rng = self.rng
        ticket = self._ticket_id(at)
        caller = self.callers.caller()
        where = address or (rng.choice(("小区门口", "路口", "弄堂口", "人行道上", "公交站旁")))
        text = description_for(category, rng).format(where=where)
        if rng.random() < 0.15:
            text += f"，请回电{caller.phone}"
        if rng.random() < 0.05:
            text = f"我是{caller.name}，" + text
        request_type = self.request_types.draw(rng)
        channel = "app" if with_coordinates and rng.random() < 0.5 else self.channels.draw(rng)
        msg: dict[str, Any] = {"service_request_id": ticket, "requested_datetime": self._local(at),
                               "service_code": category, "description": text, "request_type": request_type,
                               "channel": channel, "caller": {"name": caller.name, "phone": caller.phone}}
        if spot is not None:
            msg["lat"], msg["long"] = spot.lat, spot.lon
        else:
            msg["address_string"] = address
        lon, lat = (spot.lon, spot.lat) if spot is not None else (None, None)
        return Report("hotline", at, f"hotline:{ticket}", ticket, lon, lat, msg, caller)

    def _patrol_report(self, at: datetime, category: str, spot: Spot, team: str, members: list[str]) -> Report:
        rng = self.rng
        rid = f"XC{at.astimezone(SHANGHAI):%Y%m%d}-{spot.subdistrict}-{self._next('patrol'):05d}"
        msg = {"report_id": rid, "observed_at": self._local(at), "team": team, "inspector": rng.choice(members),
               "category": category, "lat": spot.lat, "lon": spot.lon, "note": rng.choice(PATROL_NOTES),
               "photo_url": f"https://oss.example.cn/patrol/{at.astimezone(SHANGHAI):%Y/%m/%d}/{rid}.jpg"}
        return Report("patrol", at, f"patrol:{rid}", rid, spot.lon, spot.lat, msg)

    # -- placing, routing and feedback -------------------------------------------------------------------

    def _first_event(self, district: District, spot: Spot, report: Report, category: str,
                     sensor: SimSensor | None, alarm_value: float | None) -> Event:
        """The event the worker will open the case with, decoded and located as the worker does."""
        if report.source == "iot":
            assert sensor is not None and alarm_value is not None
            th = sensor.threshold
            event = Event(event_id=report.event_id, source="iot", category=category, occurred_at=report.at,
                          lon=sensor.spot.lon, lat=sensor.spot.lat, sensor_id=sensor.sensor_id,
                          sensor_type=sensor.sensor_type, value=alarm_value,
                          description=f"{sensor.sensor_type} {alarm_value:g} beyond {th.alarm:g} "
                                      f"for {th.debounce} reading(s)")
        else:
            import orjson

            assert report.message is not None
            raw = orjson.dumps(report.message)
            event = self.decoder.hotline(raw) if report.source == "hotline" else self.decoder.patrol(raw)
            event = replace(event, lon=spot.lon, lat=spot.lat)
        return replace(event, location=spot.location)

    def _place(self, district: District, kind: str, category: str, spot: Spot, reports: list[Report],
               sensor: SimSensor | None = None, alarm_value: float | None = None,
               hotspot: str | None = None) -> Incident | None:
        """Route and schedule an incident if its place is free; None (nothing recorded) when it is not."""
        end = self.end
        reports = [r for r in reports if r.at < end]
        _, window = self.policy.for_category(category)
        first_at, last_at = reports[0].at, reports[-1].at
        for r in reports:
            if r.lon is not None and r.lat is not None and r is not reports[0]:
                located = self.world.locate(r.lon, r.lat)
                if located is None or located.key != spot.key:
                    return None
        if not self.exclusion.free(spot.key, category, spot.lon, spot.lat, first_at - window - MARGIN,
                                   last_at + window + MARGIN, owner=hotspot or ""):
            return None
        event = self._first_event(district, spot, reports[0], category, sensor, alarm_value)
        decision = self.world.rules.dispatch(event, self.history)
        incident = Incident(incident_id=f"I{self._next('incident'):06d}", district=district.code,
                            category=category, kind=kind, spot=spot, reports=reports, hotspot=hotspot,
                            sensor_id=sensor.sensor_id if sensor else None,
                            case_id=case_id_for(spot.key, reports[0].event_id))
        incident.rounds.append(Round(decision.team, decision.rule_id, first_at, first_at + decision.sla))
        self._feedback(incident, event, last_at, hotspot is not None)
        end = self._influence_end(incident, window)
        if not self.exclusion.free(spot.key, category, spot.lon, spot.lat, first_at - window - MARGIN, end,
                                   owner=hotspot or ""):
            return None
        # recorded before the reroute/reopen dispatches: those count this case too, as the worker's do
        self.history.record(spot.cell, category, first_at)
        self._reroute_teams(incident, event)
        self.exclusion.add(Block(spot.key, category, spot.lon, spot.lat, first_at - window - MARGIN, end,
                                 hotspot or incident.incident_id))
        self.incidents.append(incident)
        return incident

    def _influence_end(self, incident: Incident, window: timedelta) -> datetime:
        """Until when a new report nearby would join (or reopen) this incident's case: the worker reopens a
        handled case for `reopen_days` after it ended, at its closing (the verify) or else its resolve."""
        ended = [a.at for a in incident.actions if a.action in ("resolve", "verify")]
        if ended:
            return max(ended) + timedelta(days=self.policy.reopen_days) + MARGIN
        return incident.reports[-1].at + window + MARGIN

    def _feedback(self, incident: Incident, event: Event, last_report: datetime, chronic: bool) -> None:
        """The teams' accept / reject / resolve / verify / reopen, with realistic delays (timing only; the
        teams of later rounds are filled in by `_reroute_teams` once the case is in the history)."""
        rng = self.rng
        first = incident.rounds[0]
        team = first.team
        t = first.dispatched_at
        acts: list[Action] = []
        urgent = (first.due_at - first.dispatched_at) <= timedelta(hours=2)

        def accept_delay() -> timedelta:
            return timedelta(minutes=rng.randint(3, 20) if urgent else rng.randint(10, 120))

        if chronic:
            t = t + accept_delay()
            acts.append(Action(t, "accept", team, staff_id(team, rng), rng.choice(FEEDBACK_NOTES["accept"])))
            incident.actions = acts
            return
        if rng.random() < 0.05:
            t = t + accept_delay()
            acts.append(Action(t, "reject", team, staff_id(team, rng), rng.choice(FEEDBACK_NOTES["reject"])))
        for attempt in range(2):
            t = t + accept_delay()
            acts.append(Action(t, "accept", "?", "", rng.choice(FEEDBACK_NOTES["accept"])))
            sla = first.due_at - first.dispatched_at
            factor = math.exp(rng.gauss(math.log(0.45), 0.7))
            t = max(t + sla * factor, t + timedelta(minutes=5), last_report + MARGIN)
            t = t.replace(microsecond=0)
            acts.append(Action(t, "resolve", "?", "", rng.choice(FEEDBACK_NOTES["resolve"])))
            t = t + timedelta(minutes=rng.randint(30, 600))
            if attempt == 0 and rng.random() < 0.08:
                acts.append(Action(t, "reopen", "supervision", staff_id("supervision", rng),
                                   rng.choice(FEEDBACK_NOTES["reopen"])))
                continue
            acts.append(Action(t, "verify", "supervision", staff_id("supervision", rng),
                               rng.choice(FEEDBACK_NOTES["verify"])))
            break
        incident.actions = acts

    def _reroute_teams(self, incident: Incident, event: Event) -> None:
        """Fill in the team of each action after a reject or reopen, as the worker will dispatch it."""
        team = incident.rounds[0].team
        acts: list[Action] = []
        for a in incident.actions:
            if a.action in ("reject", "reopen"):
                d = self.world.rules.dispatch(event, self.history)
                new = d.team
                if a.action == "reject" and new == a.team:
                    new = "supervision" if a.team != "supervision" else "handling"
                acts.append(a)
                incident.rounds.append(Round(new, d.rule_id, a.at, a.at + d.sla))
                team = new
                continue
            if a.team == "?":
                a = Action(a.at, a.action, team, staff_id(team, self.rng), a.note)
            if a.action == "resolve":
                incident.rounds[-1].resolved_at = a.at
            acts.append(a)
        incident.actions = acts


# A planning attempt formats its first report's time once per retry: the same few times, again and again.
@lru_cache(maxsize=4096)
def _local_iso(at: datetime) -> str:
    return at.astimezone(SHANGHAI).isoformat(timespec="seconds")


@lru_cache(maxsize=4096)
def _local_day(at: datetime) -> str:
    return f"{at.astimezone(SHANGHAI):%Y%m%d}"


def _normal(sensor: SimSensor, rng: random.Random) -> float:
    """A reading on the normal side of the clear level."""
    from pipeline.simulate.sensorsim import PROFILES

    p = PROFILES[sensor.sensor_type]
    return rng.uniform(p.low, p.high)
