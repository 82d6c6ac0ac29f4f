"""Service levels on hand-built cases (docs/cases.md §3, §8), each figure worked out by hand from the text,
on current ClickHouse (chdb) and on the server (18.16), stored through the real sink."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from pipeline.model.records import SinkBatch
from pipeline.reports import Filters, TeamSla, health, sla, workload
from tests.analytics.lifecycle import CELL, ENGINES, Engine, H, M, T, case, engine_fixture, round_, steps

AS_OF = T + timedelta(days=10)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


def figures(t: TeamSla | None) -> dict[str, object]:
    assert t is not None
    return {k: getattr(t, k) for k in ("rounds", "rounds_due", "resolved", "resolved_on_time",
                                       "resolved_on_time_of_due", "reworked", "rejected", "superseded",
                                       "overdue_open")} | {"rate": t.resolved_on_time_rate}


# ---- the scenarios (also used to show what the old SQL answered) --------------------------------------------

def left_open_against_resolved_late() -> SinkBatch:
    """Handling accepts A and leaves it open past its due; enforcement resolves B 6 h late, and it is closed."""
    a = case("A", team="handling", status="accepted")
    b = case("B", team="enforcement", status="closed", resolved=T + 30 * H, closed=T + 32 * H)
    return SinkBatch(
        cases=[a, b],
        rounds=[
            round_("A", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H),
            round_("B", 1, "enforcement", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 30 * H,
                   verified=T + 32 * H, outcome="verified"),
        ],
    )


def resolved_awaiting_verification() -> SinkBatch:
    """C is resolved on time (T + 20 h, due T + 24 h) and never verified: its verification is due T + 44 h."""
    c = case("C", status="resolved", resolved=T + 20 * H)
    return SinkBatch(cases=[c], rounds=[
        round_("C", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 20 * H, outcome="resolved"),
    ])


def rejected_then_rerouted() -> SinkBatch:
    """Enforcement rejects D after 2 h; handling gets a fresh 48 h, resolves on time at T + 40 h (after the
    case deadline, round 1's T + 24 h, which a rejection never moves), supervision verifies at T + 41 h."""
    d = case("D", team="handling", status="closed", due=T + 50 * H, case_due=T + 24 * H, resolved=T + 40 * H,
             closed=T + 41 * H, rejected=1)
    return SinkBatch(cases=[d], rounds=[
        round_("D", 1, "enforcement", T + 5 * M, T + 24 * H, outcome="rejected", ended=T + 2 * H),
        round_("D", 2, "handling", T + 2 * H, T + 50 * H, kind="reroute", accepted=T + 3 * H, resolved=T + 40 * H,
               verified=T + 41 * H, outcome="verified"),
    ])


def reworked_then_rerouted() -> SinkBatch:
    """Enforcement's fix of E (T + 10 h) fails its check at T + 12 h; its rework round keeps the due T + 24 h;
    a more urgent report re-routes E to handling at T + 14 h (enforcement's rework round is superseded);
    handling resolves at T + 20 h, supervision verifies at T + 21 h."""
    e = case("E", team="handling", status="closed", resolved=T + 20 * H, closed=T + 21 * H, reopened=1)
    return SinkBatch(cases=[e], rounds=[
        round_("E", 1, "enforcement", T + 5 * M, T + 24 * H, accepted=T + 30 * M, resolved=T + 10 * H,
               outcome="reworked", ended=T + 12 * H),
        round_("E", 2, "enforcement", T + 12 * H, T + 24 * H, kind="rework", outcome="superseded",
               ended=T + 14 * H),
        round_("E", 3, "handling", T + 14 * H, T + 24 * H, kind="reroute", accepted=T + 15 * H,
               resolved=T + 20 * H, verified=T + 21 * H, outcome="verified"),
    ])


def dispatched_late_and_early() -> SinkBatch:
    """G is first dispatched 10 min after its first report, H 50 min after. The transitions carry the
    report's time as the dispatch time (the stamping defect the old report trusted)."""
    g = case("G", dispatched=T + 10 * M)
    h = case("H", dispatched=T + 50 * M)
    return SinkBatch(
        cases=[g, h],
        rounds=[round_("G", 1, "handling", T + 10 * M, T + 24 * H), round_("H", 1, "handling", T + 50 * M, T + 24 * H)],
        transitions=[*steps(g, ("new", T), ("dispatched", T)), *steps(h, ("new", T), ("dispatched", T))],
    )


def closing_times() -> SinkBatch:
    """I: resolved by its deadline, verified 10 h after it, by its verify_due: on time. J: resolved by its
    deadline, verified after its verify_due: late. K: resolved after its deadline: late."""
    cases, rounds = [], []
    for cid, resolved, verified in (("I", T + 20 * H, T + 34 * H), ("J", T + 20 * H, T + 50 * H),
                                    ("K", T + 30 * H, T + 31 * H)):
        cases.append(case(cid, status="closed", resolved=resolved, closed=verified))
        rounds.append(round_(cid, 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H, resolved=resolved,
                             verified=verified, outcome="verified"))
    return SinkBatch(cases=cases, rounds=rounds)


# ---- the tests -----------------------------------------------------------------------------------------------

def test_a_team_that_leaves_an_overdue_case_open_does_not_look_better(engine: Engine) -> None:
    """§8 and DOMAIN.md: a round due and left open counts against its team (resolved_on_time_rate over rounds
    due, and overdue_open), exactly as a round resolved late does."""
    engine.write(left_open_against_resolved_late())
    report = sla(engine.db, Filters(), as_of=AS_OF)
    assert figures(report.team("handling")) == {
        "rounds": 1, "rounds_due": 1, "resolved": 0, "resolved_on_time": 0, "resolved_on_time_of_due": 0,
        "reworked": 0, "rejected": 0, "superseded": 0, "overdue_open": 1, "rate": 0.0}
    assert figures(report.team("enforcement")) == {
        "rounds": 1, "rounds_due": 1, "resolved": 1, "resolved_on_time": 0, "resolved_on_time_of_due": 0,
        "reworked": 0, "rejected": 0, "superseded": 0, "overdue_open": 0, "rate": 0.0}
    c = report.closing
    assert c is not None
    assert (c.closed, c.closed_on_time, c.due, c.closed_of_due, c.closed_on_time_of_due) == (1, 0, 2, 1, 0)
    assert (c.close_rate, c.closed_on_time_of_due_rate, c.closed_on_time_rate) == (0.5, 0.0, 0.0)


def test_a_resolved_case_is_never_open_or_overdue(engine: Engine) -> None:
    """§3: resolved is awaiting verification, not open; past its verify_due it is verification-overdue."""
    engine.write(resolved_awaiting_verification())
    (w,) = workload(engine.db, Filters(), as_of=AS_OF)
    assert (w.team, w.open, w.overdue, w.awaiting_verification, w.verification_overdue) == ("handling", 0, 0, 1, 1)
    (early,) = workload(engine.db, Filters(), as_of=T + 30 * H)       # before its verify_due (T + 44 h)
    assert (early.open, early.overdue, early.awaiting_verification, early.verification_overdue) == (0, 0, 1, 0)
    (g,) = health(engine.db, Filters(), as_of=AS_OF)
    assert (g.cases, g.open, g.overdue) == (1, 0, 0)
    report = sla(engine.db, Filters(), as_of=AS_OF)
    assert figures(report.team("handling")) == {
        "rounds": 1, "rounds_due": 1, "resolved": 1, "resolved_on_time": 1, "resolved_on_time_of_due": 1,
        "reworked": 0, "rejected": 0, "superseded": 0, "overdue_open": 0, "rate": 1.0}
    v = report.verifier("supervision")
    assert v is not None and (v.verified, v.awaiting_verification, v.verification_overdue) == (0, 1, 1)
    # the dashboard's views say the same (their clock is now(), years after these times)
    assert engine.db.query_dicts("SELECT team, open, overdue, awaiting_verification, verification_overdue "
                                 "FROM v_team_open") == [
        {"team": "handling", "open": 0, "overdue": 0, "awaiting_verification": 1, "verification_overdue": 1}]
    assert engine.db.query_dicts("SELECT is_open, is_overdue, awaiting_verification FROM v_cases") == [
        {"is_open": 0, "is_overdue": 0, "awaiting_verification": 1}]


def test_a_rejected_round_is_not_due_for_its_team_and_each_round_is_its_own_teams(engine: Engine) -> None:
    """§8: enforcement's rejected round is counted apart, never due; handling's round is handling's, on time
    by its own fresh deadline; the case itself closes late (the case deadline is round 1's, §3.2)."""
    engine.write(rejected_then_rerouted())
    report = sla(engine.db, Filters(), as_of=AS_OF)
    enforcement = report.team("enforcement")
    assert figures(enforcement) == {
        "rounds": 1, "rounds_due": 0, "resolved": 0, "resolved_on_time": 0, "resolved_on_time_of_due": 0,
        "reworked": 0, "rejected": 1, "superseded": 0, "overdue_open": 0, "rate": None}
    assert figures(report.team("handling")) == {
        "rounds": 1, "rounds_due": 1, "resolved": 1, "resolved_on_time": 1, "resolved_on_time_of_due": 1,
        "reworked": 0, "rejected": 0, "superseded": 0, "overdue_open": 0, "rate": 1.0}
    c = report.closing
    assert c is not None and (c.closed, c.closed_on_time, c.due, c.closed_on_time_of_due) == (1, 0, 1, 0)
    only = sla(engine.db, Filters(team="enforcement"), as_of=AS_OF)
    assert only.teams == [enforcement] and only.dispatch is None and only.closing is None


def test_rework_is_counted_for_the_team_whose_fix_failed(engine: Engine) -> None:
    """§8: the reworked round counts as resolved (on time by its own resolution) and as rework for
    enforcement; its superseded rework round is never due; handling, which closed the case, has no rework.
    The case closes on time: final resolution T + 20 h by its deadline T + 24 h, verified within 24 h."""
    engine.write(reworked_then_rerouted())
    report = sla(engine.db, Filters(), as_of=AS_OF)
    assert figures(report.team("enforcement")) == {
        "rounds": 2, "rounds_due": 1, "resolved": 1, "resolved_on_time": 1, "resolved_on_time_of_due": 1,
        "reworked": 1, "rejected": 0, "superseded": 1, "overdue_open": 0, "rate": 1.0}
    assert figures(report.team("handling")) == {
        "rounds": 1, "rounds_due": 1, "resolved": 1, "resolved_on_time": 1, "resolved_on_time_of_due": 1,
        "reworked": 0, "rejected": 0, "superseded": 0, "overdue_open": 0, "rate": 1.0}
    c = report.closing
    assert c is not None and (c.closed, c.closed_on_time) == (1, 1)
    # hours from each round's own dispatch: enforcement accepted 25 min after, resolved 9 h 55 min after
    e = report.team("enforcement")
    assert e is not None and e.to_accept.median_h == pytest.approx(25 / 60)
    assert e.to_resolve.n == 1 and e.to_resolve.median_h == pytest.approx(9 + 55 / 60)


def test_dispatch_on_time_is_measured_from_the_first_report_to_the_first_dispatch(engine: Engine) -> None:
    """§8: G dispatched 10 min after its first report is on time, H after 50 min is not (30 min limit); a
    60 min limit makes both on time. The transitions' dispatch stamps are not read."""
    engine.write(dispatched_late_and_early())
    d = sla(engine.db, Filters(), as_of=AS_OF).dispatch
    assert d is not None and (d.cases, d.dispatched, d.dispatched_on_time, d.dispatched_on_time_rate) == (2, 2, 1, 0.5)
    d60 = sla(engine.db, Filters(), dispatch_within_min=60, as_of=AS_OF).dispatch
    assert d60 is not None and d60.dispatched_on_time == 2


def test_closed_on_time_needs_the_fix_by_the_case_deadline_and_the_check_by_its_own(engine: Engine) -> None:
    """§8: I is closed on time although verified 10 h after the handling deadline; J's verification came
    after its verify_due; K's fix came after the case deadline. Supervision verified 3, 2 of them on time."""
    engine.write(closing_times())
    report = sla(engine.db, Filters(), as_of=AS_OF)
    c = report.closing
    assert c is not None and (c.closed, c.closed_on_time, c.due, c.closed_on_time_of_due) == (3, 1, 3, 1)
    v = report.verifier("supervision")
    assert v is not None and (v.verified, v.verified_on_time, v.verified_on_time_rate) == (3, 2, 2 / 3)
    assert engine.db.query_dicts("SELECT case_id, closed_on_time FROM v_cases ORDER BY case_id") == [
        {"case_id": "I", "closed_on_time": 1}, {"case_id": "J", "closed_on_time": 0},
        {"case_id": "K", "closed_on_time": 0}]


def test_a_later_revision_of_a_round_wins_and_the_case_filter_reads_the_latest_state(engine: Engine) -> None:
    """Rounds keep their highest revision, however the batches arrive; the rounds counted are those of the
    cases whose latest state is in the filter (the round rows' own cell may be stale)."""
    batch = left_open_against_resolved_late()
    engine.write(batch)
    open_b = round_("B", 1, "enforcement", T + 5 * M, T + 24 * H, revision=0)   # an older state, written later
    moved = replace(batch.cases[0], cell="310109009001002", revision=2)         # A's first report moved cell
    engine.write(SinkBatch(cases=[moved], rounds=[open_b]))
    report = sla(engine.db, Filters(cell=CELL), as_of=AS_OF)
    assert [t.team for t in report.teams] == ["enforcement"]
    enforcement = report.team("enforcement")
    assert enforcement is not None and enforcement.resolved == 1


def test_device_faults_count_as_work_and_can_be_left_out(engine: Engine) -> None:
    """Workload and service levels count every case a team handles; `kind` narrows them; health counts
    problems only (§1)."""
    fault = case("F", kind="device_fault", discovered_by="sensor")
    engine.write(SinkBatch(cases=[fault], rounds=[round_("F", 1, "handling", T + 5 * M, T + 24 * H)]))
    engine.write(resolved_awaiting_verification())
    (w,) = workload(engine.db, Filters(), as_of=AS_OF)
    assert (w.open, w.overdue, w.awaiting_verification) == (1, 1, 1)
    (p,) = workload(engine.db, Filters(kind="problem"), as_of=AS_OF)
    assert (p.open, p.overdue, p.awaiting_verification) == (0, 0, 1)
    handling = sla(engine.db, Filters(kind="device_fault"), as_of=AS_OF).team("handling")
    assert handling is not None and (handling.rounds, handling.overdue_open) == (1, 1)
    (g,) = health(engine.db, Filters(), as_of=AS_OF)
    assert (g.cases, g.open, g.overdue) == (1, 0, 0)
