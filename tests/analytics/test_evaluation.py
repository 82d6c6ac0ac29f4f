"""The evaluation (综合评价) on a hand-built small month, every figure worked out by hand from the definitions
(pipeline/reports/evaluation.py, docs/cases.md §8), on current ClickHouse (chdb) and on the server (18.16).

The month is May 2024 (Asia/Shanghai). Sub-district S1 = 310109009, S2 = 310109010; T = 6 May 10:00 Shanghai.

| case | place | found by | what happens                                                           |
| ---- | ----- | -------- | ---------------------------------------------------------------------- |
| A    | S1    | citizen  | 2 reports; handling resolves T+20h (due T+24h), verified T+22h: on time |
| B    | S1    | patrol   | handling resolves T+30h (late), verified T+32h: closed late             |
| C    | S1    | sensor   | handling accepts, leaves it open: overdue, not closed                   |
| D    | S1    | citizen  | resolved T+10h, check fails T+12h; rework resolved T+20h, verified T+23h:    |
|      |       |          | on time, reworked                                                       |
| E    | S1    | citizen  | enforcement resolves T+10h; verification due T+12h, done T+15h: late    |
| F    | S1    | citizen  | created 29 April, due 2 May, closed 1 May on time: due in May, not filed in May |
| G    | S1    | citizen  | created 31 May 18:00, due 1 June: filed in May, not due in May          |
| H    | S2    | citizen  | enforcement rejects (T+2h); handling resolves T+40h (its own due T+50h, |
|      |       |          | the case's T+24h), verified T+41h: closed late, and a rejection (返工)   |
| I    | S2    | sensor   | a device fault (never counted)                                          |
| J    | S2    | patrol   | supervision resolves T+5h; the patrol never verifies (due T+29h)        |
| K    | S2    | citizen  | handling has its deadline extended (延期) from T+24h to T+48h at T+20h,  |
|      |       |          | resolves T+40h (on time by the extension), verified T+41h: on time       |
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime

import pytest

from pipeline.model.records import EventRow, SinkBatch
from pipeline.reports.evaluation import Period, evaluate, periods, score_units
from pipeline.reports.query import Filters
from pipeline.reports.weights import WeightsError, load_weights
from tests.analytics.lifecycle import ENGINES, Engine, H, M, T, case, engine_fixture, round_

MAY = (date(2024, 5, 1), date(2024, 6, 1))
S1, S2 = "310109009", "310109010"
C1, C2 = "310109009001001", "310109010002003"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


def event(eid: str, case_id: str, source: str, at: datetime, cell: str = C1) -> EventRow:
    return EventRow(eid, source, case_id, "E0501", cell, cell[:9], at, at, None, None, False, False, "g1")


def month() -> SinkBatch:
    f_created = datetime(2024, 4, 29, 2)
    f_due = datetime(2024, 5, 2, 2)
    f_resolved, f_closed = datetime(2024, 5, 1, 2), datetime(2024, 5, 1, 8)
    g_created = datetime(2024, 5, 31, 10)
    cases = [
        case("A", status="closed", resolved=T + 20 * H, closed=T + 22 * H),
        case("B", status="closed", discovered_by="patrol", resolved=T + 30 * H, closed=T + 32 * H),
        case("C", status="accepted", discovered_by="sensor"),
        case("D", status="closed", resolved=T + 20 * H, closed=T + 23 * H, reopened=1),
        case("E", team="enforcement", status="closed", resolved=T + 10 * H, verify_due=T + 12 * H,
             closed=T + 15 * H),
        case("F", status="closed", created=f_created, case_due=f_due, due=f_due, resolved=f_resolved,
             closed=f_closed),
        case("G", created=g_created),
        case("H", status="closed", cell=C2, due=T + 50 * H, case_due=T + 24 * H, resolved=T + 40 * H,
             closed=T + 41 * H, rejected=1),
        case("I", cell=C2, kind="device_fault", discovered_by="sensor"),
        case("J", team="supervision", status="resolved", cell=C2, discovered_by="patrol", resolved=T + 5 * H),
        case("K", status="closed", cell=C2, due=T + 48 * H, resolved=T + 40 * H, closed=T + 41 * H),
    ]
    rounds = [
        round_("A", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 20 * H,
               verified=T + 22 * H, outcome="verified"),
        round_("B", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 30 * H,
               verified=T + 32 * H, outcome="verified"),
        round_("C", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H),
        round_("D", 1, "handling", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 10 * H,
               ended=T + 12 * H, outcome="reworked"),
        round_("D", 2, "handling", T + 12 * H, T + 24 * H, kind="rework", accepted=T + 13 * H,
               resolved=T + 20 * H, verified=T + 23 * H, outcome="verified"),
        round_("E", 1, "enforcement", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 10 * H,
               verify_due=T + 12 * H, verified=T + 15 * H, outcome="verified"),
        round_("F", 1, "handling", f_created + 5 * M, f_due, accepted=f_created + H, resolved=f_resolved,
               verified=f_closed, outcome="verified"),
        round_("G", 1, "handling", g_created + 5 * M, g_created + 24 * H),
        round_("H", 1, "enforcement", T + 5 * M, T + 24 * H, ended=T + 2 * H, outcome="rejected", cell=C2),
        round_("H", 2, "handling", T + 2 * H, T + 50 * H, kind="reroute", accepted=T + 3 * H,
               resolved=T + 40 * H, verified=T + 41 * H, outcome="verified", cell=C2),
        replace(round_("I", 1, "handling", T + 5 * M, T + 24 * H, cell=C2), case_kind="device_fault"),
        round_("J", 1, "supervision", T + 5 * M, T + 24 * H, accepted=T + H, resolved=T + 5 * H,
               outcome="resolved", cell=C2),
        replace(round_("K", 1, "handling", T + 5 * M, T + 48 * H, accepted=T + H, resolved=T + 40 * H,
                       verified=T + 41 * H, outcome="verified", cell=C2), extensions=1),
    ]
    events = [
        event("h-A1", "A", "hotline", T), event("p-A2", "A", "patrol", T + H), event("p-B", "B", "patrol", T),
        event("i-C", "C", "iot", T), event("h-D", "D", "hotline", T), event("h-E", "E", "hotline", T),
        event("h-F", "F", "hotline", f_created), event("h-G", "G", "hotline", g_created),
        event("h-H", "H", "hotline", T, C2), event("i-I", "I", "iot", T, C2), event("p-J", "J", "patrol", T, C2),
        event("h-K", "K", "hotline", T, C2),
    ]
    return SinkBatch(cases=cases, rounds=rounds, events=events)


def values(units: list) -> dict[str, dict]:  # type: ignore[type-arg]
    return {u.unit: u.values for u in units}


def test_regions_of_the_hand_built_month(engine: Engine) -> None:
    engine.write(month())
    got = values(evaluate(engine.db, "region", Filters(), *MAY))
    assert got == {
        S1: {"received": 7, "filed": 6, "due": 6, "closed": 5, "close_rate": 5 / 6, "closed_on_time": 3,
             "closed_on_time_rate": 3 / 6, "overdue_unclosed": 1, "reworked": 1, "rework_rate": 1 / 6,
             "public_report_rate": 4 / 6, "discovery_rate": 2 / 6},
        S2: {"received": 3, "filed": 3, "due": 3, "closed": 2, "close_rate": 2 / 3, "closed_on_time": 1,
             "closed_on_time_rate": 1 / 3, "overdue_unclosed": 1, "reworked": 1, "rework_rate": 1 / 3,
             "public_report_rate": 2 / 3, "discovery_rate": 1 / 3},
    }
    district = values(evaluate(engine.db, "region", Filters(), *MAY, level="district"))["310109"]
    assert (district["received"], district["filed"], district["due"], district["closed"],
            district["closed_on_time"], district["reworked"]) == (10, 9, 9, 7, 4, 2)
    grids = values(evaluate(engine.db, "region", Filters(subdistrict=S1), *MAY, level="grid"))
    assert list(grids) == [C1[:12]] and grids[C1[:12]]["filed"] == 6


def test_departments_and_verifiers_of_the_hand_built_month(engine: Engine) -> None:
    engine.write(month())
    got = values(evaluate(engine.db, "department", Filters(), *MAY))
    assert got == {
        "handling": {"dispatched": 8, "due": 8, "resolved": 7, "resolve_rate": 7 / 8, "resolved_on_time": 6,
                     "resolved_on_time_rate": 6 / 8, "overdue_open": 1, "reworked": 1, "rework_rate": 1 / 8,
                     "extended": 1, "rejected": 0},
        "enforcement": {"dispatched": 2, "due": 1, "resolved": 1, "resolve_rate": 1.0, "resolved_on_time": 1,
                        "resolved_on_time_rate": 1.0, "overdue_open": 0, "reworked": 0, "rework_rate": 0.0,
                        "extended": 0, "rejected": 1},
        "supervision": {"dispatched": 1, "due": 1, "resolved": 1, "resolve_rate": 1.0, "resolved_on_time": 1,
                        "resolved_on_time_rate": 1.0, "overdue_open": 0, "reworked": 0, "rework_rate": 0.0,
                        "extended": 0, "rejected": 0},
    }
    assert values(evaluate(engine.db, "department", Filters(team="enforcement"), *MAY)) == {
        "enforcement": got["enforcement"]}
    assert values([u for u in evaluate(engine.db, "position", Filters(), *MAY, patrols=[])]) == {
        "supervision": {"verify_due": 8, "checked": 8, "verify_rate": 1.0, "checked_on_time": 7,
                        "verified_on_time_rate": 7 / 8},
        "patrol": {"verify_due": 1, "checked": 0, "verify_rate": 0.0, "checked_on_time": 0,
                   "verified_on_time_rate": 0.0},
    }


PATROLS = """\
patrols:
  patrol-s1:
    subdistricts: [310109009]
    categories: [E05]
  patrol-s2-parts:
    grids: [310109010002]
    categories: [P01, P0201]
  patrol-s2:
    grids: [310109010002]
    categories: [E0501, E0102]
"""


def test_patrol_teams_miss_rate_over_their_grids_and_categories(engine: Engine) -> None:
    """patrol-s1 (all of S1, street order): A, B, C, D, E, G filed in May, B found by a patrol, A, D, E, G first
    reported by the public: 4 / 6. patrol-s2 (S2's grid, E0501): H, J, K; J by a patrol; H, K by the public:
    2 / 3. patrol-s2-parts covers no category of the month's cases: nothing to divide."""
    from pathlib import Path

    from pipeline.reports.patrols import load_patrols

    engine.write(month())
    teams = load_patrols(Path("patrols.yaml"), PATROLS)
    units = {u.unit: u for u in evaluate(engine.db, "position", Filters(), *MAY, patrols=teams)
             if u.of == "position.patrol"}
    assert {k: u.values for k, u in units.items()} == {
        "patrol-s1": {"area_filed": 6, "patrol_found": 1, "public_first": 4, "miss_rate": 4 / 6},
        "patrol-s2": {"area_filed": 3, "patrol_found": 1, "public_first": 2, "miss_rate": 2 / 3},
        "patrol-s2-parts": {"area_filed": 0, "patrol_found": 0, "public_first": 0, "miss_rate": None},
    }
    assert (units["patrol-s1"].score, units["patrol-s1"].grade) == (33.33, "E")
    assert units["patrol-s2-parts"].score is None
    alone = evaluate(engine.db, "position", Filters(subdistrict=S2), *MAY, patrols=teams)
    assert sorted(u.unit for u in alone if u.of == "position.patrol") == ["patrol-s2"]


def test_a_bad_patrols_file_is_refused_with_file_line_and_key() -> None:
    from pathlib import Path

    from pipeline.reports.patrols import PatrolsError, load_patrols

    bad = PATROLS.replace("[E05]", "[E05, X1]").replace("grids: [310109010002]\n    categories: [P01",
                                                         "grids: [3101090100]\n    categories: [P01")
    bad = bad.replace("  patrol-s2:\n", "  patrol-s2:\n    area: north\n")
    with pytest.raises(PatrolsError) as err:
        load_patrols(Path("p.yaml"), bad)
    assert err.value.problems == [
        "p.yaml:4:23: patrols.patrol-s1.categories: 'X1' is not a category code or prefix",
        "p.yaml:6:13: patrols.patrol-s2-parts.grids: '3101090100' is not a 12-digit grid code",
        "p.yaml:9:5: patrols.patrol-s2.area: unknown key; choose among grids, subdistricts, categories",
    ]
    with pytest.raises(PatrolsError, match="P99 names no category"):
        load_patrols(Path("p.yaml"), PATROLS.replace("[P01, P0201]", "[P99]"))


def test_as_of_inside_the_month_judges_only_what_fell_due_by_then(engine: Engine) -> None:
    """Judged at T + 26 h: A, C, D, E, F, H and J are due (case deadlines T + 24 h, 2 May), K not (extended to
    T + 48 h); B's late resolution (T + 30 h) is not yet made, so B is due and not closed; H's closing (T + 41 h)
    is not made yet either."""
    engine.write(month())
    got = values(evaluate(engine.db, "region", Filters(), *MAY, as_of=T + 26 * H))
    assert (got[S1]["due"], got[S1]["closed"], got[S1]["closed_on_time"]) == (6, 4, 3)
    assert (got[S2]["due"], got[S2]["closed"]) == (2, 0)


def test_scores_and_grades_with_the_shipped_weights(engine: Engine) -> None:
    """S1: 0.2 x 100(1 - 4/6) + 0.1 x 100(6/6) + 0.3 x 100(5/6) + 0.4 x 100(3/6) = 61.67 -> C;
    S2: 0.2 x 100(1 - 2/3) + 0.1 x 100(3/6) + 0.3 x 100(2/3) + 0.4 x 100(1/3) = 45.00 -> D."""
    engine.write(month())
    units = {u.unit: u for u in evaluate(engine.db, "region", Filters(), *MAY)}
    assert (units[S1].score, units[S1].grade) == (61.67, "C")
    assert (units[S2].score, units[S2].grade) == (45.0, "D")


def test_an_indicator_with_nothing_to_divide_is_left_out_of_the_score() -> None:
    w = load_weights()
    p = Period.of(*MAY)
    u = score_units("department", p, {"x": {"dispatched": 4, "due": 0, "resolve_rate": None,
                                            "resolved_on_time_rate": None, "rework_rate": None}}, w)[0]
    assert u.scores == {"dispatched": 100.0, "resolve_rate": None, "resolved_on_time_rate": None,
                        "rework_rate": None}
    assert (u.score, u.grade) == (100.0, "A")


def test_periods_split_the_range_by_calendar() -> None:
    assert periods(date(2024, 5, 30), date(2024, 6, 4), "day")[-1] == (date(2024, 6, 3), date(2024, 6, 4))
    assert periods(date(2024, 5, 1), date(2024, 5, 15), "week") == [
        (date(2024, 5, 1), date(2024, 5, 6)), (date(2024, 5, 6), date(2024, 5, 13)),
        (date(2024, 5, 13), date(2024, 5, 15))]
    assert periods(date(2024, 11, 20), date(2025, 1, 2), "month") == [
        (date(2024, 11, 20), date(2024, 12, 1)), (date(2024, 12, 1), date(2025, 1, 1)),
        (date(2025, 1, 1), date(2025, 1, 2))]


GOOD = """\
grades: {A: 90, B: 75, C: 60, D: 40}
region: {public_report_rate: 0.25, filed: 0.25, close_rate: 0.25, closed_on_time_rate: 0.25}
department: {dispatched: 0.5, rework_rate: 0.5}
position:
  verifier: {verified_on_time_rate: 1}
"""


def test_the_shipped_weights_load_and_add_up() -> None:
    w = load_weights()
    for of in ("region", "department", "position.verifier"):
        assert abs(sum(w.of(of).values()) - 1) < 1e-9
    assert [w.grade(s) for s in (90, 89.99, 75, 60, 40, 39.9, None)] == ["A", "B", "B", "C", "D", "E", None]
    assert load_weights(text=GOOD).of("department") == {"dispatched": 0.5, "rework_rate": 0.5}


@pytest.mark.parametrize("text, problems", [
    (GOOD.replace("filed: 0.25", "filed: 0.35"),
     ["w.yaml:2:9: region: weights add up to 1.1, not 1"]),
    (GOOD.replace("filed:", "fild:"),
     ["w.yaml:2:36: region.fild: unknown indicator; choose among public_report_rate, filed, close_rate, "
      "closed_on_time_rate, rework_rate, discovery_rate"]),
    (GOOD.replace("grades:", "grade:"),
     ["w.yaml:1:1: grade: unknown key; choose among grades, region, department, position",
      "w.yaml:1:1: grades: missing"]),
    (GOOD.replace("D: 40", "D: 70"),
     ["w.yaml:1:9: grades: each grade's lowest score must be above the next one's"]),
    (GOOD.replace("rework_rate: 0.5", "rework_rate: half"),
     ["w.yaml:3:44: department.rework_rate: expected a number, got half"]),
    (GOOD.replace("verifier:", "auditor:"),
     ["w.yaml:5:3: position.auditor: unknown position; choose among verifier, patrol, inspector, checker",
      "w.yaml:5:3: position.verifier: missing"]),
])
def test_a_bad_weights_file_is_refused_with_file_line_and_key(text: str, problems: list[str]) -> None:
    from pathlib import Path

    with pytest.raises(WeightsError) as err:
        load_weights(Path("w.yaml"), text)
    assert err.value.problems == problems


def test_the_bulletins_figures_on_both_engines(engine: Engine) -> None:
    """The bulletin's own queries (totals, sources, top categories, the daily chart) on chdb and on 18.16."""
    from pipeline.reports.bulletin import build

    engine.write(month())
    b = build(engine.db, *MAY)
    assert (b.totals["filed"], b.totals["due"], b.totals["closed"], b.totals["closed_on_time"]) == (9, 9, 7, 4)
    assert b.sources == {"citizen": 6, "patrol": 2, "sensor": 1}
    assert b.top_events == [("E0501", "街面秩序 · 无照经营游商", 9)] and b.top_parts == []
    daily = {d: (f, c) for d, f, c in b.daily}
    assert len(daily) == 31 and daily["2024-05-06"] == (8, 0)
    assert daily["2024-05-07"] == (0, 4) and daily["2024-05-08"] == (0, 2)
    assert daily["2024-05-31"] == (1, 0) and daily["2024-05-01"] == (0, 1)


def test_the_grafana_panels_give_the_evaluations_rates(engine: Engine) -> None:
    """The dashboard's 按期结案率 and 结案率 panels, over May, equal the evaluation's rates per sub-district."""
    import json
    import re
    from pathlib import Path

    engine.write(month())
    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/cityops.json").read_text("utf-8"))
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in dash["panels"]}
    may = "toDateTime('2024-04-30 16:00:00', 'UTC') <= {0} AND {0} < toDateTime('2024-05-31 16:00:00', 'UTC')"
    database = getattr(engine.db, "database", None) or engine.db.settings.clickhouse_database

    def run(title: str) -> dict[str, float]:
        sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: may.format(m.group(1)), panels[title])
        rows = engine.db.query_dicts(sql.replace("cityops.", f"{database}."))
        return {str(r["subdistrict"]): float(next(v for k, v in r.items() if k != "subdistrict")) for r in rows}

    units = {u.unit: u.values for u in evaluate(engine.db, "region", Filters(), *MAY)}
    on_time = run("按期结案率 by sub-district (problem cases due in the range)")
    closed = run("结案率 by sub-district (problem cases due in the range)")
    assert on_time == pytest.approx({s: v["closed_on_time_rate"] for s, v in units.items()})
    assert closed == pytest.approx({s: v["close_rate"] for s, v in units.items()})
    assert on_time == pytest.approx({S1: 0.5, S2: 1 / 3})
