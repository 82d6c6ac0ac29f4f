"""Discovery and recurrence on hand-built cases (docs/cases.md §1, §5): problems only, each case by its latest
state, each return counted; the report and the dashboard give the same numbers. Both engines, through the
real sink."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline.model.records import CaseRow, SinkBatch
from pipeline.reports import Filters, discovery, health, hot_spots, recurrence
from tests.analytics.lifecycle import CELL, ENGINES, Engine, H, case, engine_fixture

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/cityops.json"
OTHER_CELL = "310109009001002"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


def refirst_revisions() -> list[SinkBatch]:
    """L opens at 08:10 on 1 May (Shanghai) from a citizen's call in CELL; a patrol report made at 23:50 on
    30 April in OTHER_CELL is processed later and becomes L's first report (another day, month, UTC partition,
    cell and first source); L is closed later still. M: a citizen's call on 2 May. N: a device fault on 2 May."""
    opened = datetime(2024, 5, 1, 0, 10)
    first = case("L", created=opened, discovered_by="citizen")
    refirst = replace(first, created_at=datetime(2024, 4, 30, 15, 50), cell=OTHER_CELL, discovered_by="patrol",
                      revision=2)
    closed = replace(refirst, status="closed", resolved_at=opened + 5 * H, closed_at=opened + 6 * H, revision=3)
    m = case("M", created=datetime(2024, 5, 2, 3, 0))
    n = case("N", created=datetime(2024, 5, 2, 4, 0), kind="device_fault", discovered_by="sensor")
    return [SinkBatch(cases=[first, m, n]), SinkBatch(cases=[refirst]), SinkBatch(cases=[closed, first])]


def vendor_month() -> list[CaseRow]:
    """A vendor at the same spot every day for 30 days: each day's case opens at 10:00 and closes at 18:00
    (Shanghai). Only every other case carries the worker's `recurrence_of` link."""
    start = datetime(2024, 5, 1, 2, 0)
    return [
        case(f"V{d:02d}", created=start + timedelta(days=d), status="closed",
             resolved=start + timedelta(days=d, hours=7), closed=start + timedelta(days=d, hours=8),
             recurrence_of=f"V{d - 1:02d}" if d % 2 else "")
        for d in range(30)
    ]


def device_faults_between_problems() -> list[CaseRow]:
    """In OTHER_CELL: a device fault (same category) closed on 5 May, a problem case on 6 May, another device
    fault on 7 May. Device faults are neither counted nor earlier cases a problem returns after."""
    def fault(cid: str, day: int) -> CaseRow:
        at = datetime(2024, 5, day, 2)
        return case(cid, created=at, cell=OTHER_CELL, kind="device_fault", discovered_by="sensor",
                    status="closed", resolved=at + H, closed=at + 2 * H)
    return [fault("DF1", 5), case("P6", created=datetime(2024, 5, 6, 2), cell=OTHER_CELL), fault("DF2", 7)]


def panel_sql(title: str) -> str:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (panel,) = [p for p in dash["panels"] if p["title"].startswith(title)]
    sql: str = panel["targets"][0]["rawSql"]
    return (sql.replace("$__fromTime", "toDateTime('2024-01-01 00:00:00')")
               .replace("$__toTime", "toDateTime('2025-01-01 00:00:00')").replace("cityops.", ""))


def test_a_case_whose_first_report_changed_is_counted_once_by_its_latest_state(engine: Engine) -> None:
    """§1: L counts once, on 30 April, in OTHER_CELL, found by a patrol; the device fault N not at all. The
    report, the view v_discovery_daily and the dashboard's panels give the same numbers."""
    for batch in refirst_revisions():
        engine.write(batch)
    by_day = {(r.period, r.total, r.citizen, r.patrol, r.sensor) for r in discovery(engine.db, Filters(), "day")}
    assert by_day == {("2024-04-30", 1, 0, 1, 0), ("2024-05-02", 1, 1, 0, 0)}
    by_month = {r.period: r.rate for r in discovery(engine.db, Filters(), "month")}
    assert by_month == {"2024-04-01": 1.0, "2024-05-01": 0.0}
    by_cell = {r.key: r.total for r in discovery(engine.db, Filters(), "all", "cell")}
    assert by_cell == {OTHER_CELL: 1, CELL: 1}
    view = engine.db.query_dicts("SELECT toString(day) AS d, cell, citizen, patrol, sensor, total "
                                 "FROM v_discovery_daily ORDER BY d")
    assert view == [{"d": "2024-04-30", "cell": OTHER_CELL, "citizen": 0, "patrol": 1, "sensor": 0, "total": 1},
                    {"d": "2024-05-02", "cell": CELL, "citizen": 1, "patrol": 0, "sensor": 0, "total": 1}]
    rates = engine.db.query_dicts(panel_sql("Discovery rate (patrol"))
    assert [(str(r["time"])[:10], r["discovery_rate"]) for r in rates] == [("2024-04-30", 1.0), ("2024-05-02", 0.0)]
    (sub,) = engine.db.query_dicts(panel_sql("Discovery rate by sub-district"))
    assert sub["discovery_rate"] == discovery(engine.db, Filters(), "all")[0].rate == 0.5


def test_the_vendor_every_day_is_thirty_cases_and_twenty_nine_returns(engine: Engine) -> None:
    """§5: each day's case follows a case closed the day before: 29 returns, counted from the cases
    themselves whatever the `recurrence_of` links say; the spot tops the hot spots with 30 cases."""
    engine.write(SinkBatch(cases=vendor_month()))
    (row,) = recurrence(engine.db, Filters(), within_days=30, period="all")
    assert (row.cases, row.recurrent) == (30, 29)
    (spot,) = hot_spots(engine.db, Filters(), min_cases=3)
    assert (spot.cell, spot.category, spot.cases, spot.recurrent) == (CELL, "E0501", 30, 29)
    assert (spot.first_day, spot.last_day) == ("2024-05-01", "2024-05-30")
    (next_day,) = recurrence(engine.db, Filters(), within_days=1, period="all")
    assert next_day.recurrent == 29                  # closed at 18:00, the next case at 10:00: 16 h apart


def test_device_faults_are_neither_counted_nor_returned_after(engine: Engine) -> None:
    """§1: the problem case of 6 May follows a device fault closed on 5 May: one case, no return; the
    device faults are in no count, nor in the grid's health."""
    engine.write(SinkBatch(cases=device_faults_between_problems()))
    (row,) = recurrence(engine.db, Filters(), period="all")
    assert (row.cases, row.recurrent) == (1, 0)
    assert hot_spots(engine.db, Filters(), min_cases=1)[0].cases == 1
    (g,) = health(engine.db, Filters(), as_of=datetime(2024, 6, 1))
    assert (g.cases, g.recurrent, g.proactive, g.open) == (1, 0, 0, 1)
    assert [r.total for r in discovery(engine.db, Filters(), "all")] == [1]


def test_discovery_ignores_the_kind_and_team_filters(engine: Engine) -> None:
    """Discovery is about problems before any team has them: a kind or team filter changes nothing."""
    for batch in refirst_revisions():
        engine.write(batch)
    plain = discovery(engine.db, Filters(), "all")
    assert discovery(engine.db, Filters(kind="device_fault", team="handling"), "all") == plain
