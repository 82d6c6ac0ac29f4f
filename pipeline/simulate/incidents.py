"""The kinds of simulated incident (docs/cases.md §2, §5, §6): a ticket and its neighbours' calls, a patrol's
find, a problem on a grid edge, a sensor's alarm (seen by people too, or a person's), a chronic spot's return,
a flapping sensor and the sensors that break. Each tries places until one is free (`Placer._place`), else
counts a drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.simulate.model import Broken, Hotspot, Incident, Report
from pipeline.simulate.overrides import broken_values, fault_of, incident_values, quiet_values
from pipeline.simulate.placing import Placer
from pipeline.simulate.sensorsim import Override, SimSensor, alarms_of
from pipeline.simulate.spec import case_id, family, fault_event_id
from pipeline.simulate.world import District, metres

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



class IncidentPlanner(Placer):
    """Plans one incident of each kind from its seed."""

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
