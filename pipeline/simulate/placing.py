"""Placing simulated incidents: the reports people and sensors make, the events the worker makes of them, and
the routing and course of each placed incident.

Routing waits until every incident with an earlier first report is placed (`Pending`), so the recurrence history
it counts (§5.1) holds exactly the problem cases opened before, as the worker's does; until then its zone is taken
to last for ever. The course of each case (rounds and feedback) is in `pipeline.simulate.lifecycle`. `Placer`
holds the planner's state; `pipeline.simulate.incidents` plans the kinds of incident over it and
`pipeline.simulate.plan` the seeds and their order.
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
from pipeline.simulate.people import CallerBook, staff_id
from pipeline.simulate.sensorsim import VISIBLE_TYPES, SensorNetwork, SimSensor
from pipeline.simulate.spec import FaultKind, Route, after_reject, alarm_event_id, case_id, family
from pipeline.simulate.world import District, Spot, World, offset
from pipeline.simulate.zones import FAR_FUTURE, Zone, Zones
from pipeline.stages.decode import Decoder
from rules.engine import Ruleset
from rules.recurrence import RecurrenceHistory

EXTEND_SHARE = 0.04                   # cases whose first team has its deadline extended once (延期, §4.6)


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


class Placer:
    """The planner's state, the reports it makes and how it places, routes and follows an incident."""

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

    def _positioned(self, code: str) -> list[SimSensor]:
        return [s for s in self.net.sensors if s.positioned and s.spot.cell.startswith(code)
                and s.index not in self.used_sensors]

    def _spare(self, code: str) -> list[SimSensor]:
        pool = [s for s in self.net.sensors if s.registered and s.spot.cell.startswith(code)
                and s.index not in self.used_sensors]
        self.rng.shuffle(pool)
        return pool

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
