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

The planner comes in layers, a module each: `pipeline.simulate.zones` (where an incident may start),
`pipeline.simulate.placing` (the planner's state, reports, placing, routing: `Placer`),
`pipeline.simulate.incidents` (each kind of incident: `IncidentPlanner`) and here the seeds of the period in
time order (`Planner`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from pipeline.simulate.catalog import HOTSPOT_CATEGORIES
from pipeline.simulate.config import SHANGHAI
from pipeline.simulate.incidents import IncidentPlanner, Seed
from pipeline.simulate.lifecycle import MARGIN
from pipeline.simulate.model import Hotspot
from pipeline.simulate.overrides import fault_ticks, flapping_values
from pipeline.simulate.sensorsim import alarms_of
from pipeline.simulate.spec import NEVER_STUCK, FaultKind
from pipeline.simulate.world import District
from pipeline.simulate.zones import FAR_FUTURE, Zone

HOTSPOT_TIMES = (7 * 60 + 20, 12 * 60 + 20, 17 * 60 + 20, 22 * 60 + 20)   # local minutes; 5 h apart


class Planner(IncidentPlanner):
    """Turns a config into incidents, hot spots, sensor overrides, broken sensors and the unlocated tickets."""

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
