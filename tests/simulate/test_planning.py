"""The plan follows docs/cases.md: every incident is exactly one case by the specification, chronic spots return only
after closing, rounds and verifications go to the right teams, persons' alarms stay their own cases, every broken
sensor raises its device fault; and the planner's shortcuts give the answers of the slow ways."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.simulate import Simulation, simulate
from pipeline.simulate.model import Incident
from pipeline.simulate.spec import RECURRENCE_DAYS, VERIFY_LIMIT, family, verifier
from pipeline.simulate.world import World, metres
from pipeline.simulate.zones import Zone, Zones
from tests.simulate import speccheck
from tests.simulate.conftest import small_config

T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def long_sim(world: World) -> Simulation:
    """Ten days of a quieter Hongkou: long enough for returns, rework and closed cases to pile up."""
    start = (datetime.now(UTC) - timedelta(days=12)).replace(hour=16, minute=0, second=0, microsecond=0)
    return simulate(small_config(seed=5, days=10.0, start=start, sensors=200, hotline_per_day={"310109": 300}),
                    world)


def _ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the grid shortcut ---------------------------------------------------------------------------------

def _index_spot(world: World, lon: float, lat: float) -> tuple[object, ...] | None:
    res = world.index.locate(lon, lat)
    loc = res.location()
    if loc is None or res.cell is None:
        return None
    return (res.cell, res.subdistrict, res.grid_kind, loc)


def test_locate_answers_as_the_grid_index_does(world: World) -> None:
    """Random points over the districts, on square edges and corners and outside them locate to the index's
    cell, sub-district, kind and location."""
    rng = random.Random(5)
    xs, ys = world.whole.lon_edges, world.whole.lat_edges
    points = [(rng.uniform(xs[0] - 0.002, xs[-1] + 0.002), rng.uniform(ys[0] - 0.002, ys[-1] + 0.002))
              for _ in range(3000)]
    points += [(rng.choice(xs), rng.uniform(ys[0], ys[-1])) for _ in range(500)]
    points += [(rng.uniform(xs[0], xs[-1]), rng.choice(ys)) for _ in range(500)]
    points += [(rng.choice(xs), rng.choice(ys)) for _ in range(500)]
    inside = whole = 0
    for lon, lat in points:
        spot = world.locate(lon, lat)
        got = None if spot is None else (spot.cell, spot.subdistrict, spot.grid_kind, spot.location)
        expected = _index_spot(world, lon, lat)
        assert got == expected, (lon, lat)
        inside += expected is not None
        whole += world.whole.cell_at(lon, lat) is not None
    assert whole > inside / 2, "the shortcut should answer for most points inside the districts"


def test_locate_of_a_point_in_a_clipped_square_asks_the_index(world: World) -> None:
    """A square that a cell covers only in part (a district edge) is not answered by the shortcut."""
    clipped = [c for d in world.districts.values() for c in d.cells
               if (c.col, c.row) not in world.whole.cells]
    assert clipped, "the shipped grid has cells clipped by district boundaries"
    p = clipped[0].geometry.representative_point()
    assert world.whole.cell_at(p.x, p.y) is None
    spot = world.locate(p.x, p.y)
    assert spot is not None and spot.cell == clipped[0].code


def test_grid_edge_pairs_straddle_two_grids_of_one_subdistrict(world: World) -> None:
    """`edge_pair` gives two points in side-by-side cells of two grids of one sub-district, close together."""
    rng = random.Random(3)
    district = world.districts["310109"]
    got = [p for p in (district.edge_pair(rng, 33.0) for _ in range(200)) if p is not None]
    assert len(got) > 150
    for a, b in got:
        assert a.grid != b.grid and a.book == b.book
        assert metres(a.lon, a.lat, b.lon, b.lat) <= 0.75 * 33.0


# -- the zones -----------------------------------------------------------------------------------------

def test_a_zone_blocks_from_its_window_to_its_closing() -> None:
    """A new incident nearby may not start between `first - window` and the closing, nor before a placed one;
    it may start after the closing (a return), farther away, in another book or of another category."""
    zones = Zones()
    first = T0 + timedelta(hours=10)
    zones.add(Zone("310109009", "E0501", 121.48, 31.27, first, first - timedelta(hours=4, minutes=15),
                   first + timedelta(hours=3), "I1"))
    free = lambda at, **kw: zones.free(kw.get("book", "310109009"), kw.get("cat", "E0501"),  # noqa: E731
                                       kw.get("lon", 121.48), 31.27, at)
    assert not free(first + timedelta(hours=2))
    assert not free(first - timedelta(hours=4))                 # inside the window before it
    assert not free(first - timedelta(hours=5))                 # it would join this earlier case
    assert free(first + timedelta(hours=3, minutes=1))          # after the closing: a return
    assert free(first, book="310109010") and free(first, cat="E0504")
    assert free(first, lon=121.48 + 0.004)                      # about 380 m east: out of reach of 150 m
    zones.retire(first + timedelta(hours=4))
    assert free(first + timedelta(hours=2))


# -- one incident, one case ------------------------------------------------------------------------------

def test_no_two_incidents_would_merge_by_the_specification(long_sim: Simulation) -> None:
    """No report of one incident is made near another open case of its category in its book (§2): every
    incident is exactly one case. Checked pair by pair from reports and closing times only."""
    by_book: dict[tuple[str, str], list[Incident]] = defaultdict(list)
    for inc in long_sim.truth.incidents:
        by_book[(inc.spot.book, inc.category)].append(inc)
    near = 0
    for incidents in by_book.values():
        for a in incidents:
            for b in incidents:
                if a is b:
                    continue
                assert not speccheck.merges(a, b), (a.incident_id, b.incident_id, speccheck.merges(a, b))
                near += metres(a.spot.lon, a.spot.lat, b.spot.lon, b.spot.lat) <= family(a.category).radius_m
    assert near > 0        # the check saw incidents close enough to merge if they had been open together


def test_reports_of_an_incident_stay_in_its_subdistrict_and_some_cross_grid_edges(long_sim: Simulation) -> None:
    """Every report of an incident is in the incident's sub-district (its case book); some incidents' reports
    lie in two management grids, the planted grid-edge ones always."""
    crossing = 0
    for inc in long_sim.truth.incidents:
        assert {r.spot.subdistrict for r in inc.reports if r.spot} == {inc.spot.subdistrict}, inc.incident_id
        grids = {r.spot.grid for r in inc.reports if r.spot}
        crossing += len(grids) > 1
        if inc.kind == "edge":
            assert len(grids) == 2, inc.incident_id
    assert crossing >= 10


def test_persons_alarms_next_to_open_cases_stay_their_own_cases(long_sim: Simulation) -> None:
    """A resident's button pressed within 250 m of an open E0499 case is a case of its own (§2 rule 3)."""
    truth = long_sim.truth
    by_case = {i.case_id: i for i in truth.incidents}
    pairs = [i for i in truth.incidents if i.near_case]
    assert len(pairs) >= 3
    for person in pairs:
        other = by_case[person.near_case or ""]
        assert person.scope == "person" and len(person.reports) == 1 and person.case_id != other.case_id
        assert person.category == other.category == "E0499"
        assert other.first.at < person.first.at and (other.closed_at is None or person.first.at < other.closed_at)
        assert metres(person.spot.lon, person.spot.lat, other.spot.lon, other.spot.lat) < 300
    for inc in truth.incidents:
        if inc.scope == "person":
            assert len(inc.reports) == 1


# -- recurrence ----------------------------------------------------------------------------------------

def test_chronic_spots_return_daily_each_after_the_last_case_closed(long_sim: Simulation) -> None:
    """A hot spot's problem comes back (a new case) only after its last case was closed (§5), every day of the
    period; from the second case on each is recurrent and linked to the previous one; the rules send the fourth
    and later to supervision (chronic-hotspot: three earlier cases in 30 days, §5.1)."""
    truth = long_sim.truth
    by_id = {i.incident_id: i for i in truth.incidents}
    days = int(long_sim.config.days)
    for h in truth.hotspots:
        cases = [by_id[x] for x in h.incidents]
        assert len(cases) == 4 * days, h.hotspot_id                   # none was crowded out
        assert {c.spot.cell for c in cases} == {h.spot.cell}
        for k, (prev, nxt) in enumerate(zip(cases, cases[1:], strict=False)):
            assert prev.closed_at is not None and prev.closed_at < nxt.first.at, (h.hotspot_id, k)
            c = truth.case(nxt.case_id)
            assert c["recurrent"] and c["recurrence_of"] == prev.case_id
        for k, inc in enumerate(cases):
            # a question or a suggestion goes to supervision's reply desk first (rule 55, before rule 60)
            asks = (inc.first.message or {}).get("request_type") in ("consult", "suggestion")
            chronic = inc.rounds[0].route.rule_id == "chronic-hotspot"
            assert chronic == (k >= 3 and not asks), (h.hotspot_id, k, inc.rounds[0].route.rule_id)


def test_recurrence_in_the_truth_is_the_counting_of_section_5(long_sim: Simulation) -> None:
    """Recomputed from the truth's cases alone: recurrent when an earlier problem case of the category in the
    cell was closed before this one was created, at most 30 days before."""
    problems = long_sim.truth.problems()
    closed = [(c["cell"], c["category"], _ts(c["closed_at"])) for c in problems if c["closed_at"]]
    horizon = timedelta(days=RECURRENCE_DAYS)
    recurrent = 0
    for c in problems:
        created = _ts(c["first_at"])
        assert created is not None
        want = any(cell == c["cell"] and cat == c["category"] and at is not None and created - horizon <= at < created
                   for cell, cat, at in closed)
        assert c["recurrent"] == want, c["case_id"]
        recurrent += want
    assert recurrent > 40


# -- rounds and feedback ---------------------------------------------------------------------------------

def test_rounds_follow_reject_rework_and_reroute_rules(long_sim: Simulation) -> None:
    """Rework goes back to the team that resolved it, same priority, same due (§4.4); a rejection goes elsewhere
    with a fresh due (§4.3); a more urgent merged report supersedes the round with due min(current, now + sla),
    at that report's time (§2.1)."""
    seen = defaultdict(int)
    for inc in long_sim.truth.incidents:
        for prev, r in zip(inc.rounds, inc.rounds[1:], strict=False):
            seen[r.why] += 1
            assert r.dispatched_at == prev.ended_at
            if r.why == "rework":
                assert prev.ending == "reworked" and prev.resolved_at is not None
                assert (r.team, r.priority, r.due_at) == (prev.team, prev.priority, prev.due_at)
            elif r.why == "reject":
                assert prev.ending == "rejected" and r.team != prev.team
                assert r.due_at == r.dispatched_at + r.route.sla
            else:
                assert r.why == "merge" and prev.ending == "superseded" and r.priority < prev.priority
                assert r.due_at == min(prev.due_at, r.dispatched_at + r.route.sla)
                assert r.dispatched_at in {x.at for x in inc.reports[1:]}
    assert seen["rework"] >= 10 and seen["reject"] >= 5 and seen["merge"] >= 3, dict(seen)


def test_verification_is_by_the_right_party_and_nobody_verifies_their_own_work(long_sim: Simulation) -> None:
    """Accept, resolve, reject and extend come from the round's team; verify and reopen from supervision, or from a
    patrol when supervision resolved the case (§4); every update after the case opened and after the last
    change of its status."""
    patrol = 0
    for inc in long_sim.truth.incidents:
        last = inc.first.at
        for a in inc.actions:
            r = inc.rounds[a.round]
            assert a.at > last and a.at >= r.dispatched_at, (inc.incident_id, a)
            last = a.at
            if a.action in ("accept", "resolve", "reject", "extend"):
                assert a.team == r.team, (inc.incident_id, a)
            else:
                assert a.team == verifier(r.team) != r.team, (inc.incident_id, a)
                patrol += a.team == "patrol"
    assert patrol >= 10


def test_closed_on_time_is_the_definition_of_section_8(long_sim: Simulation) -> None:
    """A closed case is on time when its final resolution is by its case deadline and its verification by the
    resolution plus the verify limit of its priority."""
    on_time = late = 0
    for c in long_sim.truth.problems():
        if c["status"] != "closed":
            assert c["closed_on_time"] is None
            continue
        resolved, closed, due = _ts(c["resolved_at"]), _ts(c["closed_at"]), _ts(c["case_due_at"])
        assert resolved is not None and closed is not None and due is not None
        want = resolved <= due and closed <= resolved + VERIFY_LIMIT[c["priority"]]
        assert c["closed_on_time"] == want
        on_time += want
        late += not want
    assert on_time and late


# -- sensors ---------------------------------------------------------------------------------------------

def _sensor_checks(sim: Simulation) -> None:
    traces = speccheck.traces(sim.messages(), {s.sensor_id: s.sensor_type for s in sim.network.sensors})
    clock_end = max(t.times[-1] for t in traces.values() if t.times)
    silent = sim.network.interval * 4 if sim.silent else timedelta(hours=1)
    broken = {b.sensor_id: b for b in sim.truth.broken}
    assert len(broken) == sim.config.broken_sensors
    registered = {s.sensor_id: s for s in sim.network.sensors if s.registered}
    for sid, s in registered.items():
        trace = traces.get(sid)
        found = speccheck.faults(trace, silent, clock_end) if trace else []
        b = broken.get(sid)
        if b is None:
            assert found == [], (sid, found)
            th = s.threshold
            assert speccheck.realarms(trace, th.alarm, th.clear, th.direction, th.debounce) == [], sid
            continue
        if b.fault is None:
            assert found == [], (sid, found)
        elif not b.fault.certain:            # the clock may or may not get there
            assert found in ([], [(b.fault.kind, b.fault.at)]), (sid, found)
        else:
            assert found == [(b.fault.kind, b.fault.at)], (sid, found, b)
            case = sim.truth.case(b.case_id)
            assert (case["kind"], case["sensor_id"], case["fault"]["kind"]) == ("device_fault", sid, b.mode)


def test_every_broken_sensor_raises_its_fault_and_no_healthy_one_does(sim: Simulation) -> None:
    """Replaying the readings by §6.2-§6.3 finds exactly the truth's device faults (one per broken sensor) and
    nothing for the healthy sensors; no sensor stays beyond its alarm level long enough to re-arm (§6.1)."""
    _sensor_checks(sim)
    assert {b.mode for b in sim.truth.broken} == {"stuck", "silent", "error"}


def test_a_month_of_one_reading_a_day_needs_a_silent_override_and_raises_no_stray_fault(world: World) -> None:
    """The bench's month (a reading a day): the registry says `silent` per sensor (4 days); with it, no healthy
    sensor is silent or stuck, and the broken ones raise their faults."""
    start = (datetime.now(UTC) - timedelta(days=16)).replace(hour=16, minute=0, second=0, microsecond=0)
    sim = simulate(small_config(seed=3, days=14.0, start=start, sensors=400, reading_interval_min=1440.0,
                                hotline_per_day={"310109": 30}, patrol_reports_per_shift=1), world)
    assert sim.silent == timedelta(days=4)
    header, first = sim.registry_csv().splitlines()[:2]
    assert header.endswith(",silent") and first.endswith(",4d")
    _sensor_checks(sim)
    assert sum(1 for b in sim.truth.broken if b.fault is not None and b.fault.certain) >= 4


def test_error_readings_raise_no_alarm(sim: Simulation) -> None:
    """A sensor sending error codes raises its fault and nothing else: -1 is beyond no alarm level (§6.2)."""
    errors = {b.sensor_id for b in sim.truth.broken if b.mode == "error"}
    assert errors
    assert not [i for i in sim.truth.incidents if i.sensor_id in errors]


def test_positioned_unregistered_sensors_say_where_they_are_and_may_alarm(sim: Simulation, messages) -> None:
    """Some unregistered sensors put their position in every reading; one of them raises an alarm (§6.1)."""
    positioned = set(sim.truth.sensors["positioned"])
    assert positioned and positioned < set(sim.truth.sensors["unregistered"])
    for m in messages:
        if m.topic == "raw_iot" and m.key is not None and m.key.decode() in positioned:
            assert b'"lon":' in m.value and b'"lat":' in m.value
    alarms = [i for i in sim.truth.incidents if i.sensor_id in positioned]
    assert len(alarms) == 1 and alarms[0].kind == "unregistered"
