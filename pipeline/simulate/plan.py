"""Planning the simulated days by docs/cases.md: which problems happen where and when, who reports them, how the
teams respond, and which sensors break.

Incidents are placed in the time order of their first report, each one real problem and so exactly one case by
the specification (`pipeline.simulate.spec`, never the worker's own matching):

- its reports scatter around it, across management-grid edges, within its sub-district (the case book, §1.1);
- no other incident of its category starts within reach of it from `first - window` until its case is closed:
  an open case absorbs every such report (§2 rule 5); after the closing, a new incident there is a new case, a
  *return* (§5). Chronic spots return on purpose, each return after the last one's case was closed;
- a person's alarm (§2 rule 3) joins nothing and nothing joins it, so it may happen anywhere; some are planned
  next to an open case of their category on purpose.

Routing waits until every incident with an earlier first report is placed (`Pending`), so the recurrence history
it counts (§5.1) holds exactly the problem cases opened before, as the worker's does; until then its zone is taken
to last for ever. The course of each case (rounds and feedback) is in `pipeline.simulate.lifecycle`.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from pipeline.model.events import Event
from pipeline.simulate import lifecycle
from pipeline.simulate.catalog import (
    CHANNELS,
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
from pipeline.simulate.lifecycle import MARGIN, Course, Merge
from pipeline.simulate.model import Broken, Hotspot, Incident, Report
from pipeline.simulate.overrides import (
    broken_values,
    fault_of,
    fault_ticks,
    flapping_values,
    incident_values,
    quiet_values,
)
from pipeline.simulate.people import CallerBook, staff_id
from pipeline.simulate.sensorsim import VISIBLE_TYPES, Override, SensorNetwork, SimSensor, alarms_of
from pipeline.simulate.spec import (
    NEVER_STUCK,
    FaultKind,
    Route,
    after_reject,
    alarm_event_id,
    case_id,
    family,
    fault_event_id,
)
from pipeline.simulate.world import District, Spot, World, metres, offset
from pipeline.stages.decode import Decoder
from rules.engine import Ruleset
from rules.recurrence import RecurrenceHistory

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=SHANGHAI)
EXTEND_SHARE = 0.04                   # cases whose first team has its deadline extended once (延期, §4.6)
HOTSPOT_TIMES = (7 * 60 + 20, 12 * 60 + 20, 17 * 60 + 20, 22 * 60 + 20)   # local minutes; 5 h apart
HOTSPOT_SCATTER_M = 45.0
PERSON_NEAR_M = 250.0                 # a resident's alarm this close to an open E0499 case (E04 radius 300 m)
E0499 = "E0499"


@dataclass(frozen=True, slots=True)
class Seed:
    """An incident to plan: when its first report is due and what kind it is."""

    at: datetime
    seq: int
    district: str
    kind: str
    extra: Any = None


@dataclass(slots=True)
class Zone:
    """Where and while a case absorbs reports of `category` (§2): from `start` (its first report less the
    window and a margin) to `end` (its closing plus a margin; for ever while it is not known)."""

    book: str
    category: str
    lon: float
    lat: float
    first: datetime
    start: datetime
    end: datetime
    owner: str


class Zones:
    """The placed cases' zones, to keep new incidents out of them.

    A new incident first reported at `t` may not start inside a zone (`start <= t <= end`): its reports would
    join that case. Nor may it start before a placed incident nearby (`first > t`): that one's reports would join
    it while it is open (planning is in time order, but a sensor's alarm comes a few readings after its seed).
    Reach: both incidents' reports scatter up to a third of the radius around their case points.
    """

    def __init__(self) -> None:
        self.zones: dict[tuple[str, str], list[Zone]] = {}

    @staticmethod
    def reach(category: str) -> float:
        return family(category).radius_m * 5 / 3 + 20.0

    def free(self, book: str, category: str, lon: float, lat: float, at: datetime, owner: str = "") -> bool:
        reach = self.reach(category)
        # a latitude difference alone is a lower bound of the distance: most zones are ruled out without metres()
        dlat = reach / 111_190.0
        for z in self.zones.get((book, category), ()):
            if owner and z.owner == owner:
                continue
            if (z.start <= at <= z.end or z.first > at) and abs(lat - z.lat) < dlat \
                    and metres(lon, lat, z.lon, z.lat) < reach:
                return False
        return True

    def add(self, zone: Zone) -> None:
        self.zones.setdefault((zone.book, zone.category), []).append(zone)

    def retire(self, before: datetime) -> None:
        """Forget the zones that ended before `before`: no incident still to come starts earlier."""
        for zones in self.zones.values():
            if any(z.end < before for z in zones):
                zones[:] = [z for z in zones if z.end >= before]


@dataclass(slots=True)
class Pending:
    """A placed incident waiting to be routed (once every incident reported before it is placed)."""

    incident: Incident
    event: Event
    zone: Zone | None
    open_until: datetime | None
    fast: bool


class Saturated:
    """A recurrence history that has seen everything: with `None` (nothing), it brackets what any history
    could make the rules decide."""

    def count(self, cell: str, category_pattern: str, window: timedelta, at: datetime) -> int:
        return 1_000_000


class Planner:
    """Turns a config into incidents, hot spots, sensor overrides, broken sensors and the unlocated tickets."""

    def __init__(self, config: SimConfig, world: World, network: SensorNetwork, rng: random.Random,
                 decoder: Decoder, callers: CallerBook) -> None:
        self.config = config
        self.world = world
        self.rules: Ruleset = world.rules
        self.net = network
        self.rng = rng
        self.decoder = decoder
        self.callers = callers
        self.zones = Zones()
        self.history = RecurrenceHistory()
        self.pending: list[tuple[datetime, int, Pending]] = []
        self.incidents: list[Incident] = []
        self.hotspots: list[Hotspot] = []
        self.broken: list[Broken] = []
        self.unlocated: list[Report] = []
        self.dropped = 0                 # incidents that found no free place (a very dense configuration)
        self.used_sensors: set[int] = set()
        self.hotline_mix = Weighted(HOTLINE_MIX)
        self.patrol_mix = Weighted(PATROL_MIX)
        self.request_types = Weighted(REQUEST_TYPES)
        self.channels = Weighted(CHANNELS)
        self._ids: dict[str, int] = {}
        self._pools: dict[tuple[str, bool], list[SimSensor]] = {}
        self._broken_plan: list[tuple[SimSensor, FaultKind, int]] = []
        self.end = config.end

    # -- ids and times -----------------------------------------------------------------------------------

    def _next(self, prefix: str) -> int:
        self._ids[prefix] = self._ids.get(prefix, 0) + 1
        return self._ids[prefix]

    def _ticket_id(self, at: datetime) -> str:
        return f"{_local_day(at)}{self._next('ticket'):06d}"

    def curve_time(self, day_start: datetime) -> datetime:
        """A time in the local day starting at `day_start`, drawn from the hotline's daily curve."""
        hour = self.rng.choices(range(24), HOURLY_CURVE)[0]
        return day_start + timedelta(hours=hour, seconds=self.rng.randrange(3600))

    # -- seeds -------------------------------------------------------------------------------------------

    def days(self) -> list[datetime]:
        day = self.config.begin.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
        out: list[datetime] = []
        while day < self.end:
            out.append(day)
            day = (day + timedelta(days=1, hours=3)).replace(hour=0)
        return out

    def seeds(self) -> list[Seed]:
        cfg, rng = self.config, self.rng
        out: list[Seed] = []
        days = self.days()
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
                    out.append(Seed(d0 + timedelta(seconds=rng.randrange(86400)), 0, code, "sensor"))
                for _ in range(cfg.grid_edge_per_day):
                    out.append(Seed(self.curve_time(d0), 0, code, "edge"))
                for _ in range(cfg.person_pairs_per_day):
                    out.append(Seed(d0 + timedelta(seconds=rng.randrange(86400)), 0, code, "person"))
                out += self._patrol_seeds(district, d0)
            for k in range(cfg.hotspots):
                hot = self._hotspot(district, k)
                if hot is None:
                    continue
                for d0 in days:
                    for minute in HOTSPOT_TIMES:
                        at = d0 + timedelta(minutes=minute + rng.randrange(-10, 11))
                        if cfg.begin <= at < self.end:
                            hot.times.append(at)
                            out.append(Seed(at, 0, code, "hotspot", hot))
            span = max(1, int((self.end - cfg.begin).total_seconds()))
            for sensor in self._positioned(code)[:cfg.unregistered_alarms]:
                self._use(sensor)
                out.append(Seed(cfg.begin + timedelta(seconds=rng.randrange(span)), 0, code, "unregistered", sensor))
            out += self._flapping_seeds(code)
            self._reserve_broken(code)
        out = [s for s in out if cfg.begin <= s.at < self.end]
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

    def _hotspot(self, district: District, k: int) -> Hotspot | None:
        """A chronic spot, its surroundings kept free of other incidents of its category for the period."""
        category = HOTSPOT_CATEGORIES[k % len(HOTSPOT_CATEGORIES)]
        begin = self.config.begin - timedelta(days=1)
        for _ in range(50):
            spot = district.random_spot(self.rng, street=True)
            if self.zones.free(spot.book, category, spot.lon, spot.lat, begin):
                hid = f"H{district.code}-{k + 1:02d}"
                self.zones.add(Zone(spot.book, category, spot.lon, spot.lat, begin, begin, FAR_FUTURE, hid))
                hot = Hotspot(hid, district.code, category, spot)
                self.hotspots.append(hot)
                return hot
        return None

    def _positioned(self, code: str) -> list[SimSensor]:
        return [s for s in self.net.sensors if s.positioned and s.spot.cell.startswith(code)
                and s.index not in self.used_sensors]

    def _flapping_seeds(self, code: str) -> list[Seed]:
        """Sensors that flap around their alarm level: a seed at the alarm their readings raise (if any)."""
        out: list[Seed] = []
        # binary sensors (a cover open or not, a button pressed or not) cannot flap around a level
        pool = [s for s in self._spare(code) if not (s.threshold.alarm == 1 and s.threshold.clear == 0)]
        for sensor in pool[:self.config.flapping_sensors]:
            self._use(sensor)
            override = flapping_values(self.net, sensor, self.rng)
            alarms = alarms_of(override.values, sensor.threshold, sensor.sensor_type)
            if not alarms:
                self.net.overrides[sensor.index] = override
                continue
            at = self.net.reading_time(sensor, override.first + alarms[0][0])
            out.append(Seed(at, 0, code, "flapping", (sensor, override, alarms[0][1])))
        return out

    def _reserve_broken(self, code: str) -> None:
        """Sensors that break (stuck, silent, error codes), kept away from every incident."""
        pool = self._spare(code)
        modes: tuple[FaultKind, ...] = ("stuck", "silent", "error")
        for k, sensor in enumerate(pool[:self.config.broken_sensors]):
            self._use(sensor)
            mode = modes[k % 3]
            if mode == "stuck" and sensor.sensor_type in NEVER_STUCK:
                mode = "error"
            need, ticks = fault_ticks(self.net, mode), self.net.ticks
            # the fault well inside the period when it is long enough
            lo, hi = (4, ticks - need - 4) if ticks > need + 8 else (1, max(2, ticks))
            start = self.rng.randrange(lo, hi)
            self._broken_plan.append((sensor, mode, start))

    def _spare(self, code: str) -> list[SimSensor]:
        pool = [s for s in self.net.sensors if s.registered and s.spot.cell.startswith(code)
                and s.index not in self.used_sensors]
        self.rng.shuffle(pool)
        return pool

    # -- planning ----------------------------------------------------------------------------------------

    def plan(self) -> None:
        last_retire: datetime | None = None
        for seed in self.seeds():
            self._route_before(seed.at)
            if last_retire is None or seed.at >= last_retire + timedelta(hours=6):
                last_retire = seed.at
                self.zones.retire(seed.at - MARGIN)
            district = self.world.districts[seed.district]
            if seed.kind == "hotline":
                self._hotline(district, seed)
            elif seed.kind == "patrol":
                self._patrol(district, seed)
            elif seed.kind in ("sensor", "multi"):
                self._sensor(district, seed, multi=seed.kind == "multi")
            elif seed.kind == "hotspot":
                self._hotspot_return(district, seed)
            elif seed.kind == "edge":
                self._grid_edge(district, seed)
            elif seed.kind == "person":
                self._person_pair(district, seed)
            elif seed.kind == "unregistered":
                self._sensor_incident(district, seed.extra, seed.at, "unregistered")
            elif seed.kind == "flapping":
                self._flapping(district, seed)
        self._route_before(FAR_FUTURE)
        self._break_sensors()
        self.incidents.sort(key=lambda i: (i.first.at, i.incident_id))

    def _hotline(self, district: District, seed: Seed) -> None:
        rng = self.rng
        category = self.hotline_mix.draw(rng)
        fam = family(category)
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
            first = self._ticket(seed.at, category, spot if text is None else None, text, located=spot)
            reports = [first]
            t = seed.at
            if rng.random() < 0.12:            # neighbours call about the same problem
                for _ in range(rng.randint(1, 3)):
                    t = t + timedelta(minutes=rng.randint(5, 120))
                    near = spot if text is not None else self._near(spot, fam.radius_m)
                    if near is None:
                        break
                    reports.append(self._ticket(t, category, near if text is None else None, text, located=near))
            if rng.random() < 0.05 and not category.startswith("P"):
                t = t + timedelta(minutes=rng.randint(30, 180))
                confirm = self._near(spot, fam.radius_m)
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
        fam = family(category)
        for attempt in range(12):
            cell = route[min(len(route) - 1, pos + attempt)]
            spot = district.spot_in(cell, rng)
            if not self._may_place(spot, category, seed.at):
                continue
            mark = self.callers.mark()
            reports = [self._patrol_report(seed.at, category, spot, team, members)]
            if rng.random() < 0.08:            # a citizen calls later about what the patrol found
                t = seed.at + timedelta(minutes=rng.randint(20, 200))
                near = self._near(spot, fam.radius_m)
                if near is not None:
                    reports.append(self._ticket(t, category, near, None))
            if self._place(district, "patrol", category, spot, reports):
                return
            self.callers.forget(mark)
        self.dropped += 1

    def _grid_edge(self, district: District, seed: Seed) -> None:
        """A problem on a grid edge: the first ticket on one side, the neighbours' on the other (one case: the
        grids are in one sub-district)."""
        rng = self.rng
        category = self.hotline_mix.draw(rng)
        fam = family(category)
        for _ in range(25):
            pair = district.edge_pair(rng, fam.radius_m / 3)
            if pair is None or not self._may_place(pair[0], category, seed.at):
                continue
            here, there = pair
            mark = self.callers.mark()
            reports = [self._ticket(seed.at, category, here, None)]
            t = seed.at
            for _ in range(rng.randint(1, 2)):
                t = t + timedelta(minutes=rng.randint(5, 90))
                reports.append(self._ticket(t, category, there, None))
            if self._place(district, "edge", category, here, reports):
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
            if self._sensor_incident(district, sensor, seed.at, "multi" if multi else "sensor", multi=multi,
                                     count_drop=False) is not None:
                return
        self.dropped += 1

    def _sensor_incident(self, district: District, sensor: SimSensor, at: datetime, kind: str, multi: bool = False,
                         open_until: datetime | None = None, near_case: str | None = None,
                         count_drop: bool = True, override: Override | None = None) -> Incident | None:
        """`sensor` crosses its threshold from its first reading at or after `at` (or as `override` says), and
        with `multi` people see it too; None when there is no room for it."""
        override = override or incident_values(self.net, sensor, at, self.rng)
        placed = None
        if override is not None:
            alarms = alarms_of(override.values, sensor.threshold, sensor.sensor_type)
            assert len(alarms) == 1, f"incident profile of {sensor.sensor_id} raises {len(alarms)} alarms"
            pos, value = alarms[0]
            alarm_at = self.net.reading_time(sensor, override.first + pos)
            if alarm_at < self.end and (sensor.scope == "person"
                                        or self._may_place(sensor.spot, sensor.category, alarm_at)):
                mark = self.callers.mark()
                reports = [self._alarm(sensor, alarm_at)]
                if multi:
                    reports += self._onlookers(sensor, alarm_at)
                placed = self._place(district, kind, sensor.category, sensor.spot, reports, sensor=sensor,
                                     alarm_value=value, open_until=open_until, near_case=near_case)
                if placed is None:
                    self.callers.forget(mark)
        if placed is not None:
            self._use(sensor)
            assert override is not None
            self.net.overrides[sensor.index] = override
        elif count_drop:
            self.dropped += 1
        return placed

    def _onlookers(self, sensor: SimSensor, at: datetime) -> list[Report]:
        """Citizens who call about what a sensor saw, and a patrol that confirms it."""
        rng = self.rng
        radius = family(sensor.category).radius_m
        out: list[Report] = []
        t = at
        for _ in range(rng.randint(1, 3)):
            t = t + timedelta(minutes=rng.randint(10, 35))
            near = self._near(sensor.spot, radius)
            if near is not None:
                out.append(self._ticket(t, sensor.category, near, None, with_coordinates=True))
        near = self._near(sensor.spot, radius)
        if near is not None:
            t = t + timedelta(minutes=rng.randint(25, 80))
            out.append(self._patrol_report(t, sensor.category, near, *self._district_patrol(near)))
        return out

    def _person_pair(self, district: District, seed: Seed) -> None:
        """A resident's emergency button next to an open case of its category (E0499: a smoke alarm, another
        resident's call): a person's alarm joins nothing (§2 rule 3), so it is a case of its own."""
        rng, net = self.rng, self.net
        buttons = [s for s in self._pool(district.code, False) if s.sensor_type == "elderly_button"]
        others = [s for s in self._pool(district.code, False) if s.category == E0499]
        for _ in range(25):
            if not buttons:
                break
            button = rng.choice(buttons)
            near = [s for s in others if s is not button
                    and metres(s.spot.lon, s.spot.lat, button.spot.lon, button.spot.lat) < PERSON_NEAR_M]
            if not near:
                continue
            other = min(near, key=lambda s: (s.sensor_type != "smoke", s.index))   # a smoke alarm when there is one
            first = incident_values(net, other, seed.at, rng)
            if first is None:
                continue
            pos, _ = alarms_of(first.values, other.threshold, other.sensor_type)[0]
            alarm_at = net.reading_time(other, first.first + pos)
            pressed = incident_values(net, button, alarm_at + timedelta(minutes=rng.randint(5, 40)), rng)
            if pressed is None:
                continue
            press_at = net.reading_time(button, pressed.first)
            if press_at >= self.end:
                continue
            case = self._sensor_incident(district, other, seed.at, "person-near", open_until=press_at,
                                         count_drop=False, override=first)
            if case is not None:
                self._sensor_incident(district, button, press_at, "person", near_case=case.case_id,
                                      override=pressed)
                return
        self.dropped += 1

    def _hotspot_return(self, district: District, seed: Seed) -> None:
        """The chronic spot's problem is back (a new case: its last one was closed): someone reports it in the
        spot's cell, sometimes a second caller too."""
        hot: Hotspot = seed.extra
        rng = self.rng
        mark = self.callers.mark()
        here = self._near(hot.spot, HOTSPOT_SCATTER_M, same_cell=True) or hot.spot
        if rng.random() < 0.5:
            first = self._ticket(seed.at, hot.category, here, None, with_coordinates=True)
        else:
            first = self._patrol_report(seed.at, hot.category, here, *self._district_patrol(hot.spot))
        reports = [first]
        if rng.random() < 0.4:
            t = seed.at + timedelta(minutes=rng.randint(5, 25))
            second = self._near(hot.spot, HOTSPOT_SCATTER_M)
            if second is not None:
                reports.append(self._ticket(t, hot.category, second, None, with_coordinates=True))
        incident = self._place(district, "hotspot", hot.category, here, reports, hotspot=hot.hotspot_id, fast=True)
        if incident is None:
            self.callers.forget(mark)
            self.dropped += 1
            return
        hot.incidents.append(incident.incident_id)

    def _flapping(self, district: District, seed: Seed) -> None:
        """A flapping sensor's one alarm; when there is no room for it, the sensor never reaches the debounce
        count instead."""
        sensor, override, value = seed.extra
        report = self._alarm(sensor, seed.at)
        if self._place(district, "flapping", sensor.category, sensor.spot, [report], sensor=sensor,
                       alarm_value=value) is not None:
            self.net.overrides[sensor.index] = override
        else:
            self.net.overrides[sensor.index] = quiet_values(self.net, sensor, override.first, self.rng)

    def _break_sensors(self) -> None:
        """The reserved sensors break; each raises one device fault (§6.3), if the period lasts long enough."""
        for sensor, mode, start in self._broken_plan:
            self.net.overrides[sensor.index] = broken_values(self.net, sensor, mode, start, self.rng)
            fault = fault_of(self.net, sensor, mode, start)
            since = self.net.reading_time(sensor, start)
            event_id = fault_event_id(sensor.sensor_id, 1)
            self.broken.append(Broken(sensor.sensor_id, sensor.sensor_type, mode, since,
                                      sensor.spot, sensor.category, fault,
                                      case_id(sensor.spot.cell, event_id) if fault else "",
                                      event_id if fault else ""))

    # -- sensors -----------------------------------------------------------------------------------------

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

    # -- reports -----------------------------------------------------------------------------------------

    def _may_place(self, spot: Spot, category: str, first_at: datetime) -> bool:
        """False when an incident first reported at `first_at` cannot start at `spot` (checked again by `_place`
        with the same answer; asked first so that an attempt that fails is skipped before its reports are made)."""
        return self.zones.free(spot.book, category, spot.lon, spot.lat, first_at)

    def _near(self, spot: Spot, radius: float, same_cell: bool = False) -> Spot | None:
        """A point within a third of `radius` of `spot`: in its sub-district (its case book; across grid edges
        as it falls), or anywhere located when the config does not keep reports in one (`edges`)."""
        keep = self.config.keep_in_subdistrict
        for _ in range(10):
            lon, lat = offset(spot.lon, spot.lat, radius / 3, self.rng)
            other = self.world.locate(lon, lat)
            if other is None or (keep and other.subdistrict != spot.subdistrict):
                continue
            if same_cell and other.cell != spot.cell:
                continue
            return other
        return None

    def _district_patrol(self, spot: Spot) -> tuple[str, list[str]]:
        return f"patrol-{spot.subdistrict}-1", [f"XC{self.rng.randrange(1, 900):04d}"]

    def _ticket(self, at: datetime, category: str, spot: Spot | None, address: str | None,
                with_coordinates: bool = False, located: Spot | None = None) -> Report:
        """A 12345 ticket: with coordinates (`spot`) or with only an address (`address`, placed at `located`)."""
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
        msg: dict[str, Any] = {"service_request_id": ticket, "requested_datetime": _local_iso(at),
                               "service_code": category, "description": text, "request_type": request_type,
                               "channel": channel, "caller": {"name": caller.name, "phone": caller.phone}}
        if spot is not None:
            msg["lat"], msg["long"] = spot.lat, spot.lon
        else:
            msg["address_string"] = address
        where_spot = spot or located
        lon, lat = (where_spot.lon, where_spot.lat) if where_spot is not None else (None, None)
        return Report("hotline", at, f"hotline:{ticket}", ticket, lon, lat, msg, caller, spot=where_spot)

    def _patrol_report(self, at: datetime, category: str, spot: Spot, team: str, members: list[str]) -> Report:
        rng = self.rng
        rid = f"XC{at.astimezone(SHANGHAI):%Y%m%d}-{spot.subdistrict}-{self._next('patrol'):05d}"
        msg = {"report_id": rid, "observed_at": _local_iso(at), "team": team, "inspector": rng.choice(members),
               "category": category, "lat": spot.lat, "lon": spot.lon, "note": rng.choice(PATROL_NOTES),
               "photo_url": f"https://oss.example.cn/patrol/{at.astimezone(SHANGHAI):%Y/%m/%d}/{rid}.jpg"}
        return Report("patrol", at, f"patrol:{rid}", rid, spot.lon, spot.lat, msg, spot=spot)

    def _alarm(self, sensor: SimSensor, at: datetime) -> Report:
        """The reading that raises `sensor`'s (first) alarm, as a report."""
        return Report("iot", at, alarm_event_id(sensor.sensor_id, 1), sensor.sensor_id, sensor.spot.lon,
                      sensor.spot.lat, None, spot=sensor.spot, sensor_id=sensor.sensor_id, scope=sensor.scope)

    # -- placing, routing and feedback -------------------------------------------------------------------

    def _event(self, report: Report, category: str, sensor: SimSensor | None = None,
               alarm_value: float | None = None) -> Event:
        """The event the worker makes of a report, decoded and located as the worker does."""
        assert report.spot is not None
        if report.source == "iot":
            assert sensor is not None and alarm_value is not None
            th = sensor.threshold
            event = Event(event_id=report.event_id, source="iot", category=category, occurred_at=report.at,
                          lon=sensor.spot.lon, lat=sensor.spot.lat, sensor_id=sensor.sensor_id,
                          sensor_type=sensor.sensor_type, value=alarm_value, scope=sensor.scope,
                          description=f"{sensor.sensor_type} {alarm_value:g} beyond {th.alarm:g} "
                                      f"for {th.debounce} reading(s)")
        else:
            assert report.message is not None
            raw = orjson.dumps(report.message)
            event = self.decoder.hotline(raw) if report.source == "hotline" else self.decoder.patrol(raw)
            event = replace(event, lon=report.spot.lon, lat=report.spot.lat)
        return replace(event, location=report.spot.location)

    def _place(self, district: District, kind: str, category: str, spot: Spot, reports: list[Report],
               sensor: SimSensor | None = None, alarm_value: float | None = None, hotspot: str | None = None,
               open_until: datetime | None = None, near_case: str | None = None,
               fast: bool = False) -> Incident | None:
        """Record an incident if its place is free (a person's alarm always is); None (nothing recorded) if not.
        Its routing and feedback follow once every earlier incident is placed (`_route_before`)."""
        reports = [r for r in reports if r.at < self.end]
        if not reports:
            return None
        if self.config.keep_in_subdistrict and any(r.spot is None or r.spot.subdistrict != spot.subdistrict
                                                   for r in reports):
            return None
        first_at = reports[0].at
        person = reports[0].scope == "person"
        if not person and not self.zones.free(spot.book, category, spot.lon, spot.lat, first_at, hotspot or ""):
            return None
        event = self._event(reports[0], category, sensor, alarm_value)
        incident = Incident(incident_id=f"I{self._next('incident'):06d}", district=district.code,
                            category=category, kind=kind, spot=spot, reports=reports, hotspot=hotspot,
                            sensor_id=sensor.sensor_id if sensor else None,
                            case_id=case_id(spot.cell, reports[0].event_id), near_case=near_case)
        zone = None
        if not person:
            zone = Zone(spot.book, category, spot.lon, spot.lat, first_at,
                        first_at - family(category).window - MARGIN, FAR_FUTURE, incident.incident_id)
            self.zones.add(zone)
        heapq.heappush(self.pending, (first_at, self._next("pending"), Pending(incident, event, zone, open_until,
                                                                               fast)))
        self.incidents.append(incident)
        return incident

    def _route_before(self, at: datetime) -> None:
        """Route the placed incidents first reported before `at` (every incident still to come is later)."""
        while self.pending and self.pending[0][0] < at:
            self._route(heapq.heappop(self.pending)[2])

    def _route(self, p: Pending) -> None:
        """The first dispatch by the rules with the recurrence history (§5.1), then the case's course."""
        inc, rng = p.incident, self.rng
        route = _route(self.rules.decide(p.event, self.history))
        # recorded before any later dispatch of this case: the worker records a case when it opens it
        self.history.record(inc.spot.cell, inc.category, inc.first.at)
        merges = [self._merge(inc, i, r, p.event) for i, r in enumerate(inc.reports) if i > 0]
        reject_to = self._reject_route(p.event, route.team) if not p.fast and rng.random() < 0.05 else None
        # 延期 (§4.6): decided apart from the main stream (the rest of the simulation stays as it was)
        extend = not p.fast and random.Random(f"extend:{inc.case_id}").random() < EXTEND_SHARE
        course = Course(inc.first.at, route, merges, reject_to, rework=not p.fast and rng.random() < 0.08,
                        last_report=inc.reports[-1].at, open_until=p.open_until, fast=p.fast, extend=extend)
        life = lifecycle.run(course, rng, staff_id)
        if life.dropped:
            inc.reports = [r for i, r in enumerate(inc.reports) if i not in life.dropped]
        inc.rounds, inc.actions, inc.closed_at = life.rounds, life.actions, life.closed_at
        if p.zone is not None:
            p.zone.end = FAR_FUTURE if life.closed_at is None else life.closed_at + MARGIN

    def _merge(self, inc: Incident, index: int, report: Report, first: Event) -> Merge:
        """What the rules say about a later report joining the case (§2.1: without the history, which re-routes
        never consult), as it is and as if it came from the case's first source."""
        event = self._event(report, inc.category)
        as_case = replace(event, source=first.source)
        return Merge(report.at, index, _route(self.rules.decide(event, None)),
                     _route(self.rules.decide(as_case, None)))

    def _reject_route(self, event: Event, rejecting: str) -> Route | None:
        """Where the case goes when its first team rejects it (§4.3), or None when that depends on how much
        history the rules are given (the specification does not say): then no rejection is planned."""
        low, high = self.rules.decide(event, None), self.rules.decide(event, Saturated())
        if _route(low) != _route(high):
            return None
        r = _route(low)
        return Route(after_reject(r.team, rejecting), r.priority, r.sla, r.rule_id)


def _route(decision: Any) -> Route:
    return Route(decision.team, decision.priority, decision.sla, decision.rule_id)


# A planning attempt formats its first report's time once per retry: the same few times, again and again.
@lru_cache(maxsize=4096)
def _local_iso(at: datetime) -> str:
    return at.astimezone(SHANGHAI).isoformat(timespec="seconds")


@lru_cache(maxsize=4096)
def _local_day(at: datetime) -> str:
    return f"{at.astimezone(SHANGHAI):%Y%m%d}"


__all__ = ["FAR_FUTURE", "Override", "Planner", "Seed", "Zone", "Zones"]
