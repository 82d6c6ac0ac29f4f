"""The case books against docs/cases.md, with the shipped Hongkou rules: who merges with whom, re-routes,
rework, recurrence links, update times, escalation stamps and clocks, device faults, books per sub-district."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from pipeline.model.events import CaseUpdate, Event, Location
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.wire import book_key, encode_located, encode_update
from rules.engine import Ruleset, load_ruleset

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)            # 02:00 in Shanghai, 2 March
CELL = "310109009001002"
NEXT_GRID_CELL = "310109009002001"                        # another management grid of the same sub-district
LOC = Location(cell=CELL, subdistrict="310109009", grid_kind="street", grid_version="g1")
LON, LAT = 121.49, 31.265
EAST_100M = 100 / (111_194.93 * 0.8548)                   # degrees of longitude per 100 m at 31.26 N


@cache
def rules() -> Ruleset:
    return load_ruleset()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def report(eid: str, minutes: float, code: str, *, source: str = "hotline", east_m: float = 0.0,
           cell: str = CELL, **extra: object) -> Event:
    loc = Location(cell=cell, subdistrict=cell[:9], grid_kind="street", grid_version="g1")
    return Event(event_id=eid, source=source, category=code, occurred_at=at(minutes),  # type: ignore[arg-type]
                 lon=LON + east_m / 100 * EAST_100M, lat=LAT, location=loc, **extra)  # type: ignore[arg-type]


def alarm(sensor: str, stype: str, minutes: float, code: str, scope: str, *, east_m: float = 0.0, n: int = 1,
          value: float = 1.0) -> Event:
    return report(f"iot:{sensor}:alarm{n}", minutes, code, source="iot", east_m=east_m, sensor_id=sensor,
                  sensor_type=stype, value=value, scope=scope)


def upd(case_id: str, action: str, team: str, minutes: float, uid: str = "") -> CaseUpdate:
    return CaseUpdate(update_id=uid or f"{case_id}:{action}:{minutes}", case_id=case_id, action=action, team=team,
                      actor="u1", at=at(minutes), note="")


def close(book: CaseBook, cid: str, minutes: float) -> None:
    team = book.cases[cid].team
    for n, action in enumerate(("accept", "resolve")):
        book.apply_update(upd(cid, action, team, minutes - 2 + n), rules())
    book.apply_update(upd(cid, "verify", "patrol" if team == "supervision" else "supervision", minutes), rules())


@pytest.fixture
def book() -> CaseBook:
    return CaseBook(book_key(LOC))


def only(out_cases: dict[str, object]) -> str:
    (cid,) = out_cases
    return cid


def test_a_residents_button_near_an_open_smoke_case_is_its_own_emergency(book: CaseBook) -> None:
    """§2 rule 3: a person's alarm never joins another case, so the 15-minute elderly rule runs."""
    smoke = only(book.add_event(alarm("SM-1", "smoke", 0, "E0499", "device"), rules()).cases)
    out = book.add_event(alarm("EB-1", "elderly_button", 20, "E0499", "person", east_m=250), rules())
    button = only(out.cases)
    assert button != smoke and len(book.cases) == 2
    (a,) = out.assignments
    assert (a.rule_id, a.priority, a.due_at) == ("elderly-emergency-call", 1, at(35))


def test_a_second_residents_button_is_a_new_case_not_a_return_of_the_first(book: CaseBook) -> None:
    """§2 rule 3 and §5: a neighbour's emergency two days after the first was closed is not the first's."""
    first = only(book.add_event(alarm("EB-1", "elderly_button", 0, "E0499", "person"), rules()).cases)
    close(book, first, 60)
    out = book.add_event(alarm("EB-2", "elderly_button", 2 * 24 * 60, "E0499", "person", east_m=120), rules())
    second = book.cases[only(out.cases)]
    assert second.case_id != first and second.recurrence_of is None and book.cases[first].reopened == 0
    assert (second.lon, second.sensor_id) == (LON + 1.2 * EAST_100M, "EB-2")


def test_the_same_residents_button_after_a_resolution_is_a_new_emergency(book: CaseBook) -> None:
    """§2 rule 3: a person's alarm joins only that person's open case."""
    first = only(book.add_event(alarm("EB-1", "elderly_button", 0, "E0499", "person"), rules()).cases)
    book.apply_update(upd(first, "resolve", "handling", 10), rules())
    out = book.add_event(alarm("EB-1", "elderly_button", 30, "E0499", "person", n=2), rules())
    assert only(out.cases) != first and book.cases[first].status == "resolved"


def test_two_bins_are_two_cases_and_a_citizen_joins_the_nearest(book: CaseBook) -> None:
    """§2 rule 3 (device): two bins 80 m apart are two cases; a citizen's call by bin A joins A's case."""
    a = only(book.add_event(alarm("BF-A", "bin_fill", 0, "E0102", "device", value=95), rules()).cases)
    b = only(book.add_event(alarm("BF-B", "bin_fill", 5, "E0102", "device", east_m=80, value=95), rules()).cases)
    call = book.add_event(report("hotline:T1", 20, "E0102", east_m=10), rules())
    assert a != b and only(call.cases) == a and call.assignments == []


def test_a_sensor_alarm_takes_over_a_citizens_case_of_its_object(book: CaseBook) -> None:
    """§2 rule 3 (device): a bin's alarm joins the open citizen case about it, which becomes that bin's."""
    citizen = only(book.add_event(report("hotline:T1", 0, "E0102"), rules()).cases)
    out = book.add_event(alarm("BF-A", "bin_fill", 30, "E0102", "device", east_m=20, value=95), rules())
    assert only(out.cases) == citizen and book.cases[citizen].sensor_id == "BF-A"
    other = book.add_event(alarm("BF-B", "bin_fill", 40, "E0102", "device", east_m=30, value=95), rules())
    assert only(other.cases) != citizen


def test_a_more_urgent_report_reroutes_the_case(book: CaseBook) -> None:
    """§2.1: a consult ticket (supervision, reply only) joined by a patrol report of the rubbish goes to handling."""
    cid = only(book.add_event(report("hotline:T1", 0, "E0102", request_type="consult"), rules()).cases)
    assert (book.cases[cid].team, book.cases[cid].priority) == ("supervision", 4)
    out = book.add_event(report("patrol:R1", 60, "E0102", source="patrol", east_m=33), rules())
    case = book.cases[cid]
    (a,) = out.assignments
    assert (a.kind, a.team, a.priority, a.rule_id) == ("reroute", "handling", 3, "garbage-found-on-patrol")
    assert case.due_at == case.case_due_at == at(60 + 4 * 60)
    assert [(r.team, r.outcome) for r in case.rounds] == [("supervision", "superseded"), ("handling", "open")]


def test_a_report_that_is_not_more_urgent_changes_nothing(book: CaseBook) -> None:
    """§2.1: only a more urgent decision re-routes."""
    cid = only(book.add_event(report("patrol:R1", 0, "E0102", source="patrol"), rules()).cases)
    out = book.add_event(report("hotline:T1", 60, "E0102", request_type="consult", east_m=20), rules())
    assert only(out.cases) == cid and out.assignments == [] and len(book.cases[cid].rounds) == 1


def test_reports_across_a_grid_edge_meet_in_one_book_and_merge() -> None:
    """§1.1: books are per sub-district; a water alarm and a call 4.8 m apart in neighbouring grids are one case."""
    a = report("iot:WL-1:alarm1", 0, "E0406", source="iot", sensor_id="WL-1", sensor_type="water_level",
               value=20.0, scope="area")
    b = report("hotline:T1", 10, "E0406", east_m=4.8, cell=NEXT_GRID_CELL)
    assert a.location and b.location and book_key(a.location) == book_key(b.location)
    book = CaseBook(book_key(a.location))
    first = only(book.add_event(a, rules()).cases)
    out = book.add_event(b, rules())
    assert only(out.cases) == first and out.assignments == [] and book.cases[first].discovered_by == "sensor"


def test_updates_stamped_before_the_case_or_its_last_update_are_refused(book: CaseBook) -> None:
    """§4: closed_at can never precede created_at."""
    cid = only(book.add_event(report("hotline:T1", 60, "E0102"), rules()).cases)
    out = book.apply_update(upd(cid, "resolve", "handling", 30), rules())
    assert "before the case was created" in out.refusals[0] and book.cases[cid].status == "dispatched"
    book.apply_update(upd(cid, "resolve", "handling", 90), rules())
    out = book.apply_update(upd(cid, "verify", "supervision", 80), rules())
    assert "before the case's last update" in out.refusals[0] and book.cases[cid].closed_at is None


def stage_items(*items: Event | CaseUpdate) -> list[tuple[str, bytes]]:
    return [(book_key(LOC), encode_update(i) if isinstance(i, CaseUpdate) else encode_located(i)) for i in items]


def test_stream_clock_stamps_an_escalation_when_it_is_made() -> None:
    """§7: the 02:15 deadline of a 02:00 button press is found at 08:00 by a litter report; stamped 08:00."""
    stage = CaseStage(rules())
    books: dict[str, CaseBook] = {}
    out = stage.apply(stage_items(alarm("EB-1", "elderly_button", 0, "E0499", "person"),
                                  report("hotline:T9", 6 * 60, "E0102", east_m=500)), books)
    (esc,) = [a for a in out.assignments if a.kind == "escalation"]
    assert (esc.created_at, esc.due_at, esc.team) == (at(6 * 60), at(15), "supervision")
    (step,) = [t for t in out.transitions if t.status == "escalated"]
    assert step.at == at(6 * 60) and "overdue since" in step.reason


def test_a_late_resolve_of_an_overdue_case_is_preceded_by_its_escalation() -> None:
    """§7.2: the clock moves to an item's time before the item is applied."""
    stage = CaseStage(rules())
    books: dict[str, CaseBook] = {}
    opened = stage.apply(stage_items(alarm("EB-1", "elderly_button", 0, "E0499", "person")), books)
    cid = only(opened.cases)
    out = stage.apply(stage_items(upd(cid, "resolve", "handling", 6 * 60)), books)
    assert [a.kind for a in out.assignments] == ["escalation"]
    assert [t.status for t in out.transitions] == ["escalated", "resolved"]


def test_an_unverified_resolution_escalates_to_command() -> None:
    """§3.2 and §7.1: verification has a deadline (priority 3: 24 h)."""
    stage = CaseStage(rules())
    books: dict[str, CaseBook] = {}
    cid = only(stage.apply(stage_items(report("hotline:T1", 0, "E0102")), books).cases)
    stage.apply(stage_items(upd(cid, "resolve", "handling", 60)), books)
    out = stage.apply(stage_items(report("hotline:T9", 60 + 24 * 60 + 1, "E0501", east_m=900)), books)
    (esc,) = [a for a in out.assignments if a.kind == "escalation"]
    assert (esc.team, esc.due_at, esc.created_at) == ("command", at(60 + 24 * 60), at(60 + 24 * 60 + 1))


def test_supervisions_own_overdue_case_escalates_to_command(book: CaseBook) -> None:
    """§7.1: never to the team that holds the case."""
    cid = only(book.add_event(report("hotline:T1", 0, "E0102", request_type="consult"), rules()).cases)
    out = book.escalate_overdue(at(5 * 24 * 60 + 1))
    (esc,) = out.assignments
    assert book.cases[cid].team == "supervision" and esc.team == "command"


def test_the_wall_clock_ignores_report_times() -> None:
    """§7.2: a report stamped in the future does not make other cases overdue; the wall clock does."""
    now = [at(0)]
    stage = CaseStage(rules(), clock="wall", wall_now=lambda: now[0])
    books: dict[str, CaseBook] = {}
    stage.apply(stage_items(alarm("EB-1", "elderly_button", 0, "E0499", "person")), books)
    out = stage.apply(stage_items(report("hotline:T9", 60, "E0102", east_m=500)), books)
    assert not [a for a in out.assignments if a.kind == "escalation"]
    now[0] = at(16)
    (esc,) = stage.escalate(books.values()).assignments
    assert esc.created_at == at(16) and esc.due_at == at(15)


def test_a_device_fault_is_its_own_case_and_never_an_emergency(book: CaseBook) -> None:
    """§6.3: a fault joins only its device's fault case; problems never join it."""
    fault = report("iot:PP-1:fault1", 0, "E0402", source="iot", sensor_id="PP-1", sensor_type="pipe_pressure",
                   value=-1.0, scope="area", fault="error")
    out = book.add_event(fault, rules())
    case = book.cases[only(out.cases)]
    assert case.kind == "device_fault" and out.assignments[0].priority > 1
    problem = book.add_event(report("hotline:T1", 5, "E0402"), rules())
    assert only(problem.cases) != case.case_id
    again = book.add_event(report("iot:PP-1:fault2", 30, "E0402", source="iot", sensor_id="PP-1",
                                  sensor_type="pipe_pressure", value=-1.0, scope="area", fault="error"), rules())
    assert only(again.cases) == case.case_id


def test_round_rows_follow_every_change(book: CaseBook) -> None:
    """§3.1: each change writes the rows of the rounds it touched, with a growing revision."""
    cid = only(book.add_event(report("hotline:T1", 0, "E0102"), rules()).cases)
    out = book.apply_update(upd(cid, "reject", "handling", 10), rules())
    rows = sorted(out.rounds.values(), key=lambda r: r.round)
    assert [(r.round, r.team, r.outcome) for r in rows] == [(1, "handling", "rejected"), (2, "supervision", "open")]
    assert all(r.revision == book.cases[cid].revision for r in rows)
