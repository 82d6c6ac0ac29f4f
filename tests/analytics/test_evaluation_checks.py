"""The checker's 按时核实率 (核实, check before filing; issue #20) on a hand-written scenario, through the cases
stage with the Hongkou rules plus `check_first: {categories: [E0501], within: 1h}` (tests/pipeline/
test_checks.py), the sink's conversion and the evaluation's SQL on current ClickHouse (chdb) and on the server
(18.16). Every expected figure is worked out by hand from this spec.

Minute 0 is 2 March 2026 02:00 Shanghai; the check deadline is 60 minutes after the report.

Every report is in sub-district 310109009, each in a management grid of its own (310109009nnn, n = 1..6 in
the table's order), so the rules' recurrence condition never fires: street-order-enforcement, enforcement, 4 h.

| case | report                                      | the patrol's answer      | check                       |
| ---- | ------------------------------------------- | ------------------------ | --------------------------- |
| K1   | 12345, E0501, minute 0                      | confirm at minute 30     | in time; filed, dispatched  |
| K2   | 12345, E0501, minute 0, 900 m east          | void at minute 50        | in time; voided (作废)       |
| K3   | 12345, E0501, minute 0, 1.8 km east         | confirm at minute 100    | late; filed, dispatched     |
| K4   | 12345, E0501, minute 0, 2.7 km east         | none                     | due in March, unanswered    |
| P1   | patrol, E0501, minute 10, 3.6 km east       | (never checked)          | filed, dispatched at once   |
| K5   | 12345, E0501, 31 March 23:30 Shanghai, 4.5 km east | none              | due 1 April 00:30: April's  |

By hand, March 2026 (judged at the month's end):
- checker `patrol`: 应核实 {K1, K2, K3, K4} = 4; 核实 {K1, K2, K3} = 3; 作废 {K2} = 1; 按时 {K1, K2} = 2;
  按时核实率 2 / 4 = 0.5;
- region 310109009: 立案 {K1, K3, P1} = 3 (K2 voided, K4 and K5 still being checked);
- department: enforcement dispatched {K1, K3, P1} = 3; the patrol is no department (its checks are not rounds
  of a team's handling).
April 2026: 应核实 {K5} = 1, nothing answered: 按时核实率 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from pipeline.model.records import SinkBatch
from pipeline.reports.evaluation import evaluate
from pipeline.reports.query import Filters
from pipeline.stages.cases import CaseBook, Outcome
from pipeline.stages.casestage import CaseStage
from tests.analytics.lifecycle import ENGINES, Engine, engine_fixture
from tests.pipeline.test_case_semantics import report, stage_items, upd
from tests.pipeline.test_checks import checked_rules

MARCH = (date(2026, 3, 1), date(2026, 4, 1))
APRIL = (date(2026, 4, 1), date(2026, 5, 1))
K5_MINUTE = (29 * 24 + 21.5) * 60          # 31 March 23:30 Shanghai


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


def cell(n: int) -> str:
    return f"310109009{n:03d}001"


def run_scenario() -> SinkBatch:
    stage = CaseStage(checked_rules())
    books: dict[str, CaseBook] = {}
    out = Outcome()
    ids: dict[str, str] = {}
    for n, (name, east) in enumerate((("K1", 0), ("K2", 900), ("K3", 1800), ("K4", 2700)), 1):
        got = stage.apply(stage_items(report(f"hotline:{name}", 0, "E0501", east_m=east, cell=cell(n))), books)
        (ids[name],) = got.cases
        out.extend(got)
    out.extend(stage.apply(stage_items(report("patrol:P1", 10, "E0501", source="patrol", east_m=3600,
                                              cell=cell(5))), books))
    for name, action, minute in (("K1", "confirm", 30), ("K2", "void", 50), ("K3", "confirm", 100)):
        got = stage.apply(stage_items(upd(ids[name], action, "patrol", minute)), books)
        assert not got.refusals, got.refusals
        out.extend(got)
    out.extend(stage.apply(stage_items(report("hotline:K5", K5_MINUTE, "E0501", east_m=4500, cell=cell(6))),
                           books))
    return SinkBatch(cases=list(out.cases.values()), events=out.events, transitions=out.transitions,
                     rounds=list(out.rounds.values()))


def units(engine: Engine, of: str, month: tuple[date, date]) -> dict[str, dict[str, Any]]:
    got = evaluate(engine.db, of, Filters(), *month, patrols=[])  # type: ignore[arg-type]
    return {f"{u.of}:{u.unit}": dict(u.values) for u in got}


def test_on_time_check_rate_of_the_hand_built_month(engine: Engine) -> None:
    engine.write(run_scenario())
    march = units(engine, "position", MARCH)
    assert march["position.checker:patrol"] == {"check_due": 4, "check_done": 3, "check_void": 1,
                                                "check_in_time": 2, "check_in_time_rate": 0.5}
    assert units(engine, "position", APRIL)["position.checker:patrol"] == {
        "check_due": 1, "check_done": 0, "check_void": 0, "check_in_time": 0, "check_in_time_rate": 0.0}
    region = units(engine, "region", MARCH)["region:310109009"]
    assert region["filed"] == 3
    departments = units(engine, "department", MARCH)
    assert set(departments) == {"department:enforcement"}
    assert departments["department:enforcement"]["dispatched"] == 3
