"""Cases: reports merge into open cases, teams move them through the lifecycle, and nothing applies twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import orjson
import pytest

from pipeline.model.cases import Case, distance_m
from pipeline.model.events import CaseUpdate, Event, Location
from pipeline.stages.cases import CaseBook
from pipeline.wire import book_key, case_book_key
from tests.pipeline.factories import T0, FakeRouter

CELL = "310109009001002"
LOC = Location(cell=CELL, subdistrict="310109009", grid_kind="street", grid_version="g1")


def ev(eid: str, *, source: str = "hotline", code: str = "E0501", minutes: float = 0, lon: float = 121.49,
       lat: float = 31.265, sensor: str | None = None) -> Event:
    return Event(event_id=eid, source=source, category=code, occurred_at=T0 + timedelta(minutes=minutes),  # type: ignore[arg-type]
                 lon=lon, lat=lat, sensor_id=sensor, location=LOC)


def upd(case_id: str, action: str, team: str, minutes: float, uid: str | None = None, note: str = "") -> CaseUpdate:
    return CaseUpdate(update_id=uid or f"{action}-{minutes}", case_id=case_id, action=action, team=team,
                      actor="u1", at=T0 + timedelta(minutes=minutes), note=note)


def snapshot(book: CaseBook) -> list[dict[str, object]]:
    return [c.to_dict() for c in book.cases.values()] + [{"clock": book.clock.timestamp()}]


@pytest.fixture
def book() -> CaseBook:
    return CaseBook(book_key(LOC))


def test_first_report_opens_and_dispatches_a_case(book: CaseBook) -> None:
    out = book.add_event(ev("hotline:1"), FakeRouter())
    (case,) = out.cases.values()
    assert case.status == "dispatched" and case.team == "enforcement" and case.discovered_by == "citizen"
    assert case.reports == 1 and case.due_at == T0 + timedelta(hours=4)
    (a,) = out.assignments
    assert a.case_id == case.case_id and a.team == "enforcement" and a.rule_id == "to-enforcement"
    assert [t.status for t in out.transitions] == ["new", "dispatched"]
    assert case_book_key(case.case_id) == book.key == CELL[:9] and case.case_id.startswith("C" + CELL[:12])


def test_nearby_report_of_same_category_merges(book: CaseBook) -> None:
    router = FakeRouter()
    first = book.add_event(ev("patrol:1", source="patrol"), router)
    # about 60 m east, 30 minutes later, another source
    out = book.add_event(ev("hotline:2", minutes=30, lon=121.49 + 0.00063), router)
    (case,) = out.cases.values()
    assert case.case_id == next(iter(first.cases))
    assert case.reports == 2 and set(case.sources) == {"patrol", "hotline"}
    assert case.discovered_by == "patrol"
    assert out.assignments == [] and out.events[0].merged


def test_far_or_other_category_opens_new_cases(book: CaseBook) -> None:
    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    assert distance_m(121.49, 31.265, 121.49 + 0.003, 31.265) > 150
    book.add_event(ev("hotline:2", lon=121.49 + 0.003), router)          # ~285 m away (E05 radius 150 m)
    book.add_event(ev("hotline:4", code="E0102"), router)                # another category
    assert len(book.cases) == 3


def test_an_open_case_absorbs_reports_long_after_its_window(book: CaseBook) -> None:
    """docs/cases.md §2 rule 5: the window only admits reports made before the first; an open case takes every
    later report of its problem for as long as it is open."""
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    book.apply_update(upd(cid, "accept", "enforcement", 10), router)
    out = book.add_event(ev("hotline:3", minutes=4 * 24 * 60), router)   # four days on, the E05 window is 4 h
    assert list(out.cases) == [cid] and out.assignments == [] and len(book.cases) == 1
    early = book.add_event(ev("hotline:0", minutes=-5 * 60), router)     # made 5 h before it: beyond the window
    assert list(early.cases) != [cid] and len(book.cases) == 2


def test_sensor_case_absorbs_a_citizen_report(book: CaseBook) -> None:
    router = FakeRouter()
    book.add_event(ev("iot:S1:alarm1", source="iot", code="P0101", sensor="S1"), router)
    out = book.add_event(ev("hotline:9", code="P0101", minutes=20, lat=31.265 + 0.0002), router)
    (case,) = out.cases.values()
    assert case.discovered_by == "sensor" and case.sources == ("iot", "hotline")


def test_replayed_event_changes_nothing(book: CaseBook) -> None:
    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    before = snapshot(book)
    again = book.add_event(ev("hotline:1"), router)
    assert again.duplicates == 1 and not again.cases and not again.assignments
    assert snapshot(book) == before


def test_full_lifecycle_with_reject_rework_and_close(book: CaseBook) -> None:
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1", code="P0101"), router).cases))
    assert book.cases[cid].team == "handling"
    out = book.apply_update(upd(cid, "reject", "handling", 10, note="not ours: a gas cover"), router)
    case = book.cases[cid]
    assert case.team == "supervision" and case.status == "dispatched" and "rejected by handling" in case.reason
    assert out.assignments[0].kind == "reroute" and case.rejected == 1
    assert case.due_at == T0 + timedelta(minutes=10, hours=4)            # a fresh round after a rejection
    assert case.case_due_at == T0 + timedelta(hours=4)                   # the case's own deadline stays
    book.apply_update(upd(cid, "accept", "supervision", 20), router)
    book.apply_update(upd(cid, "resolve", "supervision", 60), router)
    refused = book.apply_update(upd(cid, "verify", "supervision", 80), router)
    assert "only patrol checks this case" in refused.refusals[0]         # supervision never checks itself
    book.apply_update(upd(cid, "verify", "patrol", 90), router)
    assert book.cases[cid].status == "closed" and book.cases[cid].closed_at == T0 + timedelta(minutes=90)
    out = book.apply_update(upd(cid, "reopen", "patrol", 120, note="still loose"), router)
    case = book.cases[cid]
    assert case.status == "dispatched" and case.reopened == 1 and case.closed_at is None
    assert case.team == "supervision" and case.due_at == T0 + timedelta(minutes=10, hours=4)   # same due
    (a,) = out.assignments
    assert a.kind == "rework" and a.team == "supervision" and a.round == 3
    assert [t.status for t in out.transitions] == ["reopened", "dispatched"]
    assert [(r.team, r.kind, r.outcome) for r in case.rounds] == [
        ("handling", "dispatch", "rejected"), ("supervision", "reroute", "reworked"),
        ("supervision", "rework", "open")]
    assert len(book.cases) == 1


def _close(book: CaseBook, cid: str, at_minutes: float, team: str = "enforcement") -> None:
    book.apply_update(upd(cid, "accept", team, at_minutes - 2, uid=f"a{cid}{at_minutes}"), FakeRouter())
    book.apply_update(upd(cid, "resolve", team, at_minutes - 1, uid=f"r{cid}{at_minutes}"), FakeRouter())
    book.apply_update(upd(cid, "verify", "supervision", at_minutes, uid=f"v{cid}{at_minutes}"), FakeRouter())


def test_a_report_after_closing_opens_a_new_case_linked_to_the_closed_one(book: CaseBook) -> None:
    """docs/cases.md §5: a problem that comes back is a new case (a return), never a reopening."""
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    _close(book, cid, 30)
    out = book.add_event(ev("hotline:2", minutes=24 * 60), router)
    (new,) = out.cases.values()
    assert new.case_id != cid and new.recurrence_of == cid and new.previous_closed_at == T0 + timedelta(minutes=30)
    assert book.cases[cid].reopened == 0 and book.cases[cid].status == "closed"
    assert [a.kind for a in out.assignments] == ["dispatch"]


def test_a_report_after_the_resolution_sends_the_case_back_for_rework(book: CaseBook) -> None:
    """§2 rule 5 and §4.4: someone says it is not fixed before supervision checked: back to the team, same due."""
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    book.apply_update(upd(cid, "resolve", "enforcement", 60), router)
    out = book.add_event(ev("hotline:2", minutes=90), router)
    case = book.cases[cid]
    assert list(out.cases) == [cid] and case.status == "dispatched" and case.reopened == 1
    assert [(a.kind, a.team, a.due_at) for a in out.assignments] == [
        ("rework", "enforcement", T0 + timedelta(hours=4))]


def test_report_made_before_closing_but_processed_after_joins_without_reopening(book: CaseBook) -> None:
    """Topics are consumed independently: a citizen's call made while the case was open can be processed after
    the team closed it. It is one more report of that case and changes nothing else; a call made after the
    closing is a new case."""
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    _close(book, cid, 90)
    late = book.add_event(ev("patrol:2", source="patrol", minutes=20), router)   # made at +20 min, case open
    assert list(late.cases) == [cid] and late.events[0].merged
    assert book.cases[cid].reopened == 0 and book.cases[cid].status == "closed" and late.assignments == []
    assert book.cases[cid].reports == 2 and len(book.cases) == 1
    after = book.add_event(ev("hotline:3", minutes=120), router)                  # made after it was closed
    assert list(after.cases) != [cid] and len(book.cases) == 2


@pytest.mark.parametrize(("action", "team", "why"), [
    ("resolve", "handling", "assigned to enforcement, not handling"),
    ("verify", "supervision", "cannot verify a case that is dispatched"),
    ("verify", "enforcement", "only supervision checks this case"),
    ("reopen", "supervision", "cannot reopen a case that is dispatched"),
])
def test_impossible_transitions_are_refused(book: CaseBook, action: str, team: str, why: str) -> None:
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    before = snapshot(book)
    out = book.apply_update(upd(cid, action, team, 5), router)
    assert len(out.refusals) == 1 and why in out.refusals[0]
    assert snapshot(book) == before


def test_an_update_before_its_case_waits_for_it(book: CaseBook) -> None:
    """Topics are consumed independently: an accept may overtake the report that opens its case."""
    from pipeline.model.cases import case_id_for

    router = FakeRouter()
    cid = case_id_for(CELL[:12], "hotline:1")
    early = book.apply_update(upd(cid, "accept", "enforcement", 5), router)
    assert not early.refusals and cid in book.parked and book.take_parked_dirty() == {cid: book.parked[cid]}
    out = book.add_event(ev("hotline:1"), router)
    assert book.cases[cid].status == "accepted" and cid not in book.parked
    assert [t.status for t in out.transitions] == ["new", "dispatched", "accepted"]
    assert book.take_parked_dirty() == {cid: []}


def test_parked_updates_expire_with_a_reason(book: CaseBook) -> None:
    router = FakeRouter()
    book.apply_update(upd("C310109009001-000000000000", "accept", "handling", 5), router)
    book.add_event(ev("hotline:1", code="E0102", minutes=60 * 25), router)
    out = book.expire_parked()
    assert len(out.refusals) == 1 and "no such case (waited 24 h)" in out.refusals[0] and not book.parked


def test_resolving_a_closed_case_is_refused(book: CaseBook) -> None:
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    book.apply_update(upd(cid, "resolve", "enforcement", 5), router)
    book.apply_update(upd(cid, "verify", "supervision", 6), router)
    out = book.apply_update(upd(cid, "resolve", "enforcement", 7, uid="again"), router)
    assert "cannot resolve a case that is closed" in out.refusals[0]


def test_overdue_case_is_escalated_once(book: CaseBook) -> None:
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    assert not book.escalate_overdue(T0 + timedelta(hours=3)).assignments
    out = book.escalate_overdue(T0 + timedelta(hours=5))
    (a,) = out.assignments
    assert a.kind == "escalation" and a.team == "supervision" and a.case_id == cid
    assert not book.escalate_overdue(T0 + timedelta(hours=6)).assignments


def test_stream_clock_escalates_on_later_events(book: CaseBook) -> None:
    """Without a wall clock, a later event in the same grid is what makes an earlier case overdue."""
    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    out = book.add_event(ev("hotline:2", code="E0102", minutes=5 * 60), router)
    out.extend(book.escalate_overdue())
    assert [a.kind for a in out.assignments] == ["dispatch", "escalation"]


def test_book_round_trips_through_its_table_encoding(book: CaseBook) -> None:
    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    book.add_event(ev("hotline:2", minutes=1), router)
    copy = CaseBook.from_cases(book.key, [Case.from_dict(orjson.loads(orjson.dumps(c.to_dict())))
                                          for c in book.take_dirty()])
    assert snapshot(copy) == snapshot(book)
    out = copy.add_event(ev("hotline:2", minutes=1), router)
    assert out.duplicates == 1


def test_a_case_decoded_typed_is_the_case_from_dict_makes(book: CaseBook) -> None:
    """The restore's typed decode (`case_from_json`) gives the case `from_dict` gives, field for field and encoded
    again byte for byte, with its equal times one object; a record the types refuse still decodes, through
    `from_dict`; unknown keys are dropped and missing ones take defaults."""
    from pipeline.model.cases import case_from_json

    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    book.add_event(ev("hotline:2", minutes=1), router)
    cases = book.take_dirty()
    assert cases and any(c.rounds for c in cases)
    for case in cases:
        raw = orjson.dumps(case.to_dict())
        typed, plain = case_from_json(raw), Case.from_dict(orjson.loads(raw))
        assert typed == plain == case
        assert orjson.dumps(typed.to_dict()) == raw
        if typed.rounds:
            assert typed.rounds[0].dispatched_at is typed.first_dispatched_at
            again = case_from_json(raw)         # repeated strings are one object across decoded cases
            assert again.rounds[0].team is typed.rounds[0].team and again.rounds[0].kind is typed.rounds[0].kind
        assert case_from_json(raw).category is typed.category and case_from_json(raw).status is typed.status
        odd = {**orjson.loads(raw), "from_a_newer_writer": 1}
        del odd["after_photo_url"]
        assert case_from_json(orjson.dumps(odd)) == Case.from_dict(dict(odd)) == replace(case, after_photo_url="")
        odd["reports"] = [3]            # no type of this version's: from_dict's way, which keeps what it finds
        assert case_from_json(orjson.dumps(odd)).reports == [3]


def test_assignment_ids_are_stable_across_replays() -> None:
    """Two books fed the same inputs (a replay after a crash that lost the state) give the same ids."""
    ids = []
    for _ in range(2):
        b = CaseBook(CELL[:12])
        out = b.add_event(ev("hotline:1"), FakeRouter())
        cid = out.assignments[0].case_id
        out2 = b.apply_update(upd(cid, "reject", "enforcement", 3), FakeRouter())
        ids.append([a.assignment_id for a in out.assignments + out2.assignments])
    assert ids[0] == ids[1] and len(set(ids[0])) == 2


def test_recurrence_counts_earlier_cases_of_the_cell(book: CaseBook) -> None:
    seen: list[int] = []

    class CountingRouter(FakeRouter):
        def dispatch(self, event, recurrence):  # type: ignore[no-untyped-def]
            seen.append(recurrence.count(event.location.cell, "E05*", timedelta(days=30), event.occurred_at))
            return super().dispatch(event, recurrence)

    router = CountingRouter()
    for day in range(3):
        out = book.add_event(replace(ev(f"hotline:{day}"), occurred_at=T0 + timedelta(days=day)), router)
        _close(book, next(iter(out.cases)), day * 24 * 60 + 60)      # each day's case closed: the next is a return
    assert seen == [0, 1, 2] and len(book.cases) == 3


def test_only_changed_cases_are_dirty(book: CaseBook) -> None:
    router = FakeRouter()
    book.add_event(ev("hotline:1"), router)
    book.add_event(ev("hotline:2", code="E0102"), router)
    assert len(book.take_dirty()) == 2
    book.add_event(ev("hotline:3", minutes=1), router)
    (changed,) = book.take_dirty()
    assert changed.category == "E0501" and changed.reports == 2


def test_prune_forgets_long_closed_cases(book: CaseBook) -> None:
    router = FakeRouter()
    cid = next(iter(book.add_event(ev("hotline:1"), router).cases))
    book.apply_update(upd(cid, "resolve", "enforcement", 5), router)
    book.apply_update(upd(cid, "verify", "supervision", 6), router)
    book.add_event(ev("hotline:2", code="E0102", minutes=60 * 24 * 30), router)
    assert book.prune() == []
    book.add_event(ev("hotline:3", code="E0102", minutes=60 * 24 * 100), router)
    assert book.prune() == [cid] and cid not in book.cases and "hotline:1" not in book.seen


def test_distance_agrees_with_haversine_at_street_scale() -> None:
    import math

    def haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
        p1, p2 = math.radians(lat1), math.radians(lat2)
        a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
        return 2 * 6_371_008.8 * math.asin(math.sqrt(a))

    for dlon, dlat in [(0.001, 0.0), (0.0, 0.001), (0.003, -0.002), (-0.0004, 0.0009)]:
        exact = haversine(121.49, 31.265, 121.49 + dlon, 31.265 + dlat)
        assert abs(distance_m(121.49, 31.265, 121.49 + dlon, 31.265 + dlat) - exact) < exact * 0.001


def test_discovery_follows_event_time_not_processing_order(book: CaseBook) -> None:
    """A sensor alarm consumed after a citizen's call about the same problem still counts as found by the sensor."""
    router = FakeRouter()
    book.add_event(ev("hotline:1", code="P0101", minutes=30, lon=121.4903), router)
    out = book.add_event(ev("iot:S1:alarm1", source="iot", code="P0101", sensor="S1", minutes=10), router)
    (case,) = out.cases.values()
    assert case.discovered_by == "sensor" and case.created_at == T0 + timedelta(minutes=10) and case.reports == 2
    assert (case.cell, book.cases[case.case_id].lon) == (CELL, 121.49)


def test_an_escalation_repeats_its_dispatch_whatever_merged_since() -> None:
    """The overdue check runs when it runs (after a batch, on a timer): what it sends must not depend on that,
    or a replay after a crash would re-send an escalation id with other content."""
    router = FakeRouter()
    quiet, busy = CaseBook(book_key(LOC)), CaseBook(book_key(LOC))
    for b in (quiet, busy):
        b.add_event(ev("hotline:1"), router)
    # the busy book merges a patrol report (another source, a little further east) before the check runs
    busy.add_event(ev("patrol:2", source="patrol", minutes=30, lon=121.49 + 0.0003), router)
    late = T0 + timedelta(hours=5)
    (a,) = quiet.escalate_overdue(late).assignments
    (b,) = busy.escalate_overdue(late).assignments
    assert a.kind == b.kind == "escalation" and a.assignment_id == b.assignment_id
    assert a == b
    assert set(next(iter(busy.cases.values())).sources) == {"hotline", "patrol"}   # the case itself did change


def test_escalation_finds_exactly_the_overdue_open_cases() -> None:
    """Many cases opened, accepted, resolved, rejected (re-dispatched, a new due time) and reopened, the clock
    moving in steps; after each step the escalated cases are exactly those that a scan of every case finds open,
    not yet escalated and past due, and a book restored from its cases at any point does the same."""
    import random

    rng = random.Random(7)
    router = FakeRouter()
    book = CaseBook(book_key(LOC))
    escalated: set[str] = set()
    minutes = 0.0
    for step in range(400):
        minutes += rng.choice([1, 5, 30, 90])
        roll = rng.random()
        ids = list(book.cases)
        if roll < 0.35 or not ids:
            # far apart (no merging): each report opens its own case
            book.add_event(ev(f"hotline:{step}", minutes=minutes, lon=121.40 + step * 0.001), router)
        else:
            case = book.cases[rng.choice(ids)]
            action = rng.choice(["accept", "resolve", "reject", "verify", "reopen"])
            checker = "patrol" if case.team == "supervision" else "supervision"
            team = checker if action in ("verify", "reopen") else case.team
            book.apply_update(upd(case.case_id, action, team, minutes, uid=f"u{step}"), router)
        if rng.random() < 0.2:       # a restart: the book rebuilt from its cases
            book = CaseBook.from_cases(book.key, [Case.from_dict(c.to_dict()) for c in book.cases.values()])
        # the scan the heap replaces: every open case past due, not yet escalated, and every resolved case past
        # its verification deadline, not yet escalated for it
        expected = {c.case_id for c in book.cases.values()
                    if c.status in ("dispatched", "accepted") and not c.escalated and c.due_at
                    and c.due_at < book.clock}
        expected |= {c.case_id for c in book.cases.values()
                     if c.status == "resolved" and c.round and c.round.verify_escalated_at is None
                     and c.verify_due_at and c.verify_due_at < book.clock}
        out = book.escalate_due()
        got = {a.case_id for a in out.assignments if a.kind == "escalation"}
        assert got == expected, step
        escalated |= got
        assert not any(c.status in ("dispatched", "accepted") and not c.escalated and c.due_at
                       and c.due_at < book.clock for c in book.cases.values())
        assert all(c.round is None or c.round.escalated_at is None or c.round.escalated_at >= c.round.due_at
                   for c in book.cases.values())
    assert len(escalated) > 20      # the walk did reach overdue cases
