"""Reports agree with answers computed in plain Python from a generated history, on both engines."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.model.records import CaseRow
from pipeline.reports import (
    Filters,
    SlaReport,
    discovery,
    discovery_change,
    health,
    hot_spots,
    recurrence,
    recurrence_change,
    sla,
    workload,
)
from tests.analytics.conftest import history
from tests.analytics.engines import ChdbDatabase
from tests.analytics.history import (
    TEAMS,
    History,
    closed_on_time,
    expected_discovery,
    expected_recurrence,
    expected_team_sla,
    grid_of,
    in_range,
    is_open,
    is_overdue,
    problems,
    quantile_exact,
    sh_day,
    verification_overdue,
)

AS_OF = datetime(2024, 7, 15)
Q1, Q2 = (date(2024, 1, 1), date(2024, 4, 1)), (date(2024, 4, 1), date(2024, 7, 1))


@pytest.fixture(scope="module")
def hist() -> History:
    return history()


@pytest.fixture
def db(chdb_db: ChdbDatabase, hist: History) -> ChdbDatabase:
    for batch in hist.batches:
        chdb_db.store(batch)
    return chdb_db


def check_all(db: Any, h: History) -> None:
    """Every report against the oracle; shared by the chdb and the server test."""
    check_discovery(db, h)
    check_recurrence(db, h)
    check_sla(db, h)
    check_team_filter(db)
    check_workload_and_health(db, h)


def check_discovery(db: Any, h: History) -> None:
    for period, by in (("month", "none"), ("week", "subdistrict"), ("day", "category"), ("all", "grid")):
        got = {
            (r.period, r.key): {"citizen": r.citizen, "patrol": r.patrol, "sensor": r.sensor}
            for r in discovery(db, Filters(), period, by)
        }
        assert got == expected_discovery(h, period, by), (period, by)
    f = Filters(since=date(2024, 2, 1), until=date(2024, 3, 1), subdistrict="310109010")
    got_rows = discovery(db, f, "all")
    want = expected_discovery(h, "all", "none", f.since, f.until)
    subset = sum(
        1
        for c in problems(h)
        if c.subdistrict == "310109010" and date(2024, 2, 1) <= sh_day(c.created_at) < date(2024, 3, 1)
    )
    assert sum(r.total for r in got_rows) == subset
    assert sum(want[("all", "")].values()) >= subset
    change = discovery_change(db, Q1, Q2)
    exp = [expected_discovery(h, "all", "none", *q)[("all", "")] for q in (Q1, Q2)]
    rates = [(e["patrol"] + e["sensor"]) / sum(e.values()) for e in exp]
    assert change.before.rate == pytest.approx(rates[0]) and change.after.rate == pytest.approx(rates[1])
    assert change.change == pytest.approx((rates[1] - rates[0]) / rates[0])
    assert change.change is not None and change.change > 0  # the generator raised proactive shares


def check_recurrence(db: Any, h: History) -> None:
    for within in (7, 30):
        flags = expected_recurrence(h, within)
        per_month: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for cid, (_, flag) in flags.items():
            m = sh_day(h.latest[cid].created_at).replace(day=1).isoformat()
            per_month[m][0] += 1
            per_month[m][1] += flag
        got = {r.period: [r.cases, r.recurrent] for r in recurrence(db, Filters(), within, "month")}
        assert got == dict(per_month)
        assert sum(v[1] for v in got.values()) > 0
    ch = recurrence_change(db, Q1, Q2, within_days=30)
    for row, q in ((ch.before, Q1), (ch.after, Q2)):
        flags = expected_recurrence(h, 30, *q)
        assert (row.cases, row.recurrent) == (len(flags), sum(f for _, f in flags.values()))
    # hot spots: cell × category with at least k cases in Q2, ranked by cases then recurrences
    k = 8
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for cid, (_, flag) in expected_recurrence(h, 30, *Q2).items():
        c = h.latest[cid]
        counts[(c.cell, c.category)][0] += 1
        counts[(c.cell, c.category)][1] += flag
    want = sorted(
        ((cell, cat, n, r) for (cell, cat), (n, r) in counts.items() if n >= k),
        key=lambda x: (-x[2], -x[3], x[0], x[1]),
    )
    got_spots = hot_spots(db, Filters(*Q2), min_cases=k, within_days=30)
    assert [(s.cell, s.category, s.cases, s.recurrent) for s in got_spots] == want
    assert want, "the generator's hot cells should qualify"


TEAM_FIGURES = ("rounds", "rounds_due", "resolved", "resolved_on_time", "resolved_on_time_of_due", "accepted",
                "accepted_on_time", "reworked", "rejected", "superseded", "overdue_open")


def check_sla(db: Any, h: History) -> None:
    for f in (Filters(), Filters(*Q2), Filters(*Q2, kind="problem"), Filters(subdistrict="310109010")):
        cases = [c for c in h.latest.values() if in_filter(c, f)]
        check_sla_of(sla(db, f, dispatch_within_min=30, as_of=AS_OF), h, cases)


def in_filter(c: CaseRow, f: Filters) -> bool:
    """The filters the SLA check uses, on a case's latest state."""
    return (in_range(sh_day(c.created_at), f.since, f.until) and (f.kind is None or c.kind == f.kind)
            and (f.subdistrict is None or c.subdistrict == f.subdistrict))


def check_sla_of(report: SlaReport, h: History, cases: list[CaseRow]) -> None:
    ids = {c.case_id for c in cases}
    got = {t.team: {k: getattr(t, k) for k in TEAM_FIGURES} for t in report.teams}
    assert got == expected_team_sla(h, ids, AS_OF)
    rounds = [r for r in h.rounds.values() if r.case_id in ids]
    for t in report.teams:
        mine = [r for r in rounds if r.team == t.team]
        for got_d, secs in (
            (t.to_accept, [int((r.accepted_at - r.dispatched_at).total_seconds()) for r in mine if r.accepted_at]),
            (t.to_resolve, [int((r.resolved_at - r.dispatched_at).total_seconds()) for r in mine
                            if r.resolved_at and r.outcome in ("resolved", "verified", "reworked")]),
        ):
            assert got_d.n == len(secs)
            if secs:
                assert got_d.median_h == pytest.approx(quantile_exact(secs, 0.5) / 3600)
                assert got_d.p90_h == pytest.approx(quantile_exact(secs, 0.9) / 3600)
    # the centre's dispatch: first dispatch within 30 min of the (latest) first report
    delays = [c.first_dispatched_at - c.created_at for c in cases if c.first_dispatched_at]
    assert report.dispatch is not None
    assert (report.dispatch.cases, report.dispatch.dispatched, report.dispatch.dispatched_on_time) == (
        len(cases), len(delays), sum(1 for d in delays if d <= timedelta(minutes=30)))
    # verification, per verifier
    verifiers: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in rounds:
        if r.outcome not in ("resolved", "verified", "reworked"):
            continue
        v = verifiers[r.verified_by or ("patrol" if r.team == "supervision" else "supervision")]
        v[0] += r.verified_at is not None
        v[1] += bool(r.verified_at and r.verify_due_at and r.verified_at <= r.verify_due_at)
        v[2] += r.outcome == "resolved"
        v[3] += bool(r.outcome == "resolved" and r.verify_due_at and r.verify_due_at < AS_OF)
    assert {v.verifier: [v.verified, v.verified_on_time, v.awaiting_verification, v.verification_overdue]
            for v in report.verification} == dict(verifiers)
    # closing: on time of closed, and of due (case_due_at before as-of)
    closed = [c for c in cases if c.status == "closed"]
    due = [c for c in cases if c.case_due_at and c.case_due_at < AS_OF]
    c = report.closing
    assert c is not None
    assert (c.cases, c.closed, c.closed_on_time, c.due, c.closed_of_due, c.closed_on_time_of_due) == (
        len(cases), len(closed), sum(map(closed_on_time, closed)), len(due),
        sum(1 for x in due if x.status == "closed"), sum(map(closed_on_time, due)))
    secs = [int((x.closed_at - x.created_at).total_seconds()) for x in closed if x.closed_at]
    assert c.to_close.median_h == pytest.approx(quantile_exact(secs, 0.5) / 3600)
    assert 0 < c.closed_on_time < c.closed and c.due > c.closed_of_due > c.closed_on_time_of_due > 0


def check_team_filter(db: Any) -> None:
    everyone = sla(db, Filters(), as_of=AS_OF)
    only = sla(db, Filters(team="handling"), as_of=AS_OF)
    assert only.teams == [everyone.team("handling")] and only.verification == []
    assert only.dispatch is None and only.closing is None
    patrol = sla(db, Filters(team="patrol"), as_of=AS_OF)
    assert patrol.teams == [] and patrol.verification == [everyone.verifier("patrol")]
    assert [r.team for r in workload(db, Filters(team="supervision"), as_of=AS_OF)] == ["supervision"]


def check_workload_and_health(db: Any, h: History) -> None:
    for kind in (None, "problem"):
        rows = {r.team: r for r in workload(db, Filters(*Q2, kind=kind), as_of=AS_OF)}
        assert set(rows) == set(TEAMS)
        for team, r in rows.items():
            cases = [c for c in h.latest.values() if c.team == team and kind in (None, c.kind)]
            assert r.open == sum(map(is_open, cases))
            assert r.overdue == sum(1 for c in cases if is_overdue(c, AS_OF))
            assert r.awaiting_verification == sum(1 for c in cases if c.status == "resolved")
            assert r.verification_overdue == sum(1 for c in cases if verification_overdue(c, AS_OF))
            assert r.created == sum(1 for c in cases if Q2[0] <= sh_day(c.created_at) < Q2[1])
            assert r.closed == sum(
                1 for c in cases
                if c.status == "closed" and c.closed_at and Q2[0] <= sh_day(c.closed_at) < Q2[1]
            )
    flags = expected_recurrence(h, 30, *Q2)
    grids: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for cid, (_, flag) in flags.items():
        c = h.latest[cid]
        g = grids[grid_of(c.cell)]
        g[0] += 1
        g[1] += is_open(c)
        g[2] += is_overdue(c, AS_OF)
        g[3] += flag
        g[4] += c.discovered_by != "citizen"
    got = health(db, Filters(*Q2), within_days=30, as_of=AS_OF)
    assert {g.grid: [g.cases, g.open, g.overdue, g.recurrent, g.proactive] for g in got} == dict(grids)
    scores = [g.score for g in got]
    assert scores == sorted(scores) and all(0 <= s <= 100 for s in scores)


def test_reports_match_plain_python_on_current_clickhouse(db: ChdbDatabase, hist: History) -> None:
    """Discovery, recurrence, hot spots, SLA, workload and health equal the oracle (chdb, replayed data)."""
    check_all(db, hist)


@pytest.mark.clickhouse
def test_reports_match_plain_python_on_the_server(
    server_db: Any, isolated_settings: Settings, hist: History
) -> None:
    """The same checks on the real server (18.16 here), loaded through the sink."""
    from pipeline.sink.sink import ClickHouseSink

    sink = ClickHouseSink(isolated_settings)
    try:
        for batch in hist.batches:
            sink.write(batch)
    finally:
        sink.close()
    check_all(server_db, hist)
