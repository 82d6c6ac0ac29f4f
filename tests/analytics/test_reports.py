"""Reports agree with answers computed in plain Python from a generated history, on both engines."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.reports import (
    Filters,
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
    History,
    expected_discovery,
    expected_recurrence,
    first_times,
    grid_of,
    quantile_exact,
    sh_day,
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
        for c in h.latest.values()
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


def check_sla(db: Any, h: History) -> None:
    firsts = first_times(h)
    for team in ("enforcement", "handling", "supervision"):
        cases = [c for c in h.latest.values() if c.team == team]
        row = next(r for r in sla(db, Filters(), dispatch_within_min=30, as_of=AS_OF) if r.team == team)
        disp = [
            firsts[c.case_id]["dispatched"] - c.created_at for c in cases if "dispatched" in firsts[c.case_id]
        ]
        assert row.cases == len(cases)
        assert row.dispatched == len(disp)
        assert row.dispatched_on_time == sum(1 for d in disp if d <= timedelta(minutes=30))
        closed = [c for c in cases if c.status == "closed"]
        assert row.closed == len(closed)
        assert row.closed_on_time == sum(
            1 for c in closed if c.due_at and c.closed_at and c.closed_at <= c.due_at
        )
        assert row.overdue_open == sum(
            1 for c in cases if c.status != "closed" and c.due_at and c.due_at < AS_OF
        )
        for status, got in (("accepted", row.to_accept), ("resolved", row.to_resolve)):
            secs = [
                int((firsts[c.case_id][status] - c.created_at).total_seconds())
                for c in cases
                if status in firsts[c.case_id]
            ]
            assert got.n == len(secs)
            assert got.median_h == pytest.approx(quantile_exact(secs, 0.5) / 3600)
            assert got.p90_h == pytest.approx(quantile_exact(secs, 0.9) / 3600)
        secs = [int((c.closed_at - c.created_at).total_seconds()) for c in closed if c.closed_at]
        assert row.to_close.median_h == pytest.approx(quantile_exact(secs, 0.5) / 3600)


def check_team_filter(db: Any) -> None:
    everyone = {r.team: r for r in sla(db, Filters(), as_of=AS_OF)}
    only = sla(db, Filters(team="handling"), as_of=AS_OF)
    assert only == [everyone["handling"]]
    assert [r.team for r in workload(db, Filters(team="supervision"), as_of=AS_OF)] == ["supervision"]


def check_workload_and_health(db: Any, h: History) -> None:
    rows = {r.team: r for r in workload(db, Filters(*Q2), as_of=AS_OF)}
    for team, r in rows.items():
        cases = [c for c in h.latest.values() if c.team == team]
        assert r.open == sum(1 for c in cases if c.status != "closed")
        assert r.overdue == sum(1 for c in cases if c.status != "closed" and c.due_at and c.due_at < AS_OF)
        assert r.created == sum(1 for c in cases if Q2[0] <= sh_day(c.created_at) < Q2[1])
        assert r.closed == sum(
            1 for c in cases if c.status == "closed" and c.closed_at and Q2[0] <= sh_day(c.closed_at) < Q2[1]
        )
    flags = expected_recurrence(h, 30, *Q2)
    grids: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for cid, (_, flag) in flags.items():
        c = h.latest[cid]
        g = grids[grid_of(c.cell)]
        g[0] += 1
        g[1] += c.status != "closed"
        g[2] += bool(c.status != "closed" and c.due_at and c.due_at < AS_OF)
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
    from pipeline.sink import ClickHouseSink

    sink = ClickHouseSink(isolated_settings)
    try:
        for batch in hist.batches:
            sink.write(batch)
    finally:
        sink.close()
    check_all(server_db, hist)
