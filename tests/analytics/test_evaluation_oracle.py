"""Every evaluation indicator on a simulated month equals an oracle computed from the simulator's truth.

The month (May 2024, Hongkou, a few percent of the demo volume) goes through the worker's own chain in
process (tests/analytics/simmonth.py) into ClickHouse (chdb, and the 18.16 server); the evaluation SQL reads
it there. The oracle below never reads the database: it counts the truth's cases, rounds and reports
(pipeline/simulate/truth.py, built from the planner's records) with the definitions of
pipeline/reports/evaluation.py written again in Python.

Where the worker and the truth disagree about a case, that case is left out on both sides, and the test says
how many. Over a month they disagree about the chronic hot spots' returns (plan `hotspot`: after some days the
worker's `chronic-hotspot` rule sends a return to supervision where the planner sent it to enforcement, and
refuses the planner's feedback for it; a known disagreement between the simulator and the worker, reported with
issue #20, not an evaluation matter), and a few citizens' cases at the hot spots' cells. The test fails when
more than ten other cases are left out, so a new disagreement is not hidden.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pipeline.model.records import SinkBatch
from pipeline.reports.evaluation import evaluate
from pipeline.reports.query import Filters
from pipeline.simulate.spec import VERIFY_LIMIT
from pipeline.simulate.world import World
from tests.analytics.lifecycle import ENGINES, Engine, engine_fixture

MONTH = (date(2024, 5, 1), date(2024, 6, 1))
T0 = datetime(2024, 4, 30, 16, tzinfo=UTC)
T1 = datetime(2024, 5, 31, 16, tzinfo=UTC)


def at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def within(x: datetime | None) -> bool:
    return x is not None and T0 <= x < T1


@pytest.fixture(scope="module")
def simulated() -> tuple[SinkBatch, dict[str, Any], Counter[str], str]:
    """The month's rows (the cases the truth agrees on) and its truth (the same cases), and how many left out."""
    from pipeline.simulate import simulate
    from tests.analytics.simmonth import month_config, run_month

    world = World()
    sim = simulate(month_config(2024, 5, scale=0.03, seed=20), world)
    batch, refused = run_month(sim, world, strict=False)
    truth = sim.truth.to_json()
    want = {c["case_id"]: c for c in truth["cases"]}
    rounds = defaultdict(list)
    for r in batch.rounds:
        rounds[r.case_id].append(r)
    differ = set(refused)
    for c in batch.cases:
        t = want.get(c.case_id)
        if t is None or c.kind != t["kind"]:
            differ.add(c.case_id)
            continue
        same = (c.team == t["team"] and c.status == t["status"] and c.reopened == t["reworked"]
                and c.rejected == t["rejected"] and c.case_due_at == at(t["case_due_at"])
                and c.closed_at == at(t["closed_at"]) and len(rounds[c.case_id]) == len(t["rounds"])
                and all(r.team == tr["team"] and r.outcome == tr["outcome"] and r.due_at == at(tr["due_at"])
                        and r.resolved_at == at(tr["resolved_at"])
                        for r, tr in zip(sorted(rounds[c.case_id], key=lambda r: r.round), t["rounds"],
                                         strict=False)))
        if not same:
            differ.add(c.case_id)
    differ |= set(want) - {c.case_id for c in batch.cases}
    kept = SinkBatch(cases=[c for c in batch.cases if c.case_id not in differ],
                     rounds=[r for r in batch.rounds if r.case_id not in differ],
                     events=[e for e in batch.events if e.case_id not in differ])
    plans = Counter(c["plan"] for c in truth["cases"] if c["case_id"] in differ and c["kind"] == "problem")
    truth = {**truth, "cases": [c for c in truth["cases"] if c["case_id"] not in differ]}
    return kept, truth, plans, sim.patrols_yaml(world)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


# ---- the oracle: the definitions again, over the truth ---------------------------------------------------------

def oracle_regions(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in truth["cases"]:
        if c["kind"] != "problem":
            continue
        o = out.setdefault(c["subdistrict"], defaultdict(int))
        o["received"] += sum(1 for r in c["reports"] if within(at(r["at"])))
        if within(at(c["first_at"])):
            o["filed"] += 1
            o["by_public"] += c["discovered_by"] == "citizen"
        if within(at(c["case_due_at"])):
            o["due"] += 1
            o["closed"] += c["status"] == "closed"
            o["closed_on_time"] += bool(c["closed_on_time"])
            o["reworked"] += c["reworked"] > 0 or c["rejected"] > 0
    return out


def oracle_departments(truth: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in truth["cases"]:
        if c["kind"] != "problem":
            continue
        for r in c["rounds"]:
            o = out.setdefault(r["team"], defaultdict(int))
            o["dispatched"] += within(at(r["dispatched_at"]))
            o["rejected"] += r["outcome"] == "rejected" and within(at(r["ended_at"]))
            if r["outcome"] in ("rejected", "superseded") or not within(at(r["due_at"])):
                continue
            o["due"] += 1
            resolved = at(r["resolved_at"])
            o["resolved"] += resolved is not None
            o["resolved_on_time"] += resolved is not None and resolved <= at(r["due_at"])  # type: ignore[operator]
            o["reworked"] += r["outcome"] == "reworked"
            o["extended"] += r["extensions"] > 0
    return out


def oracle_verifiers(truth: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in truth["cases"]:
        if c["kind"] != "problem":
            continue
        for r in c["rounds"]:
            resolved = at(r["resolved_at"])
            if resolved is None or r["outcome"] in ("rejected", "superseded"):
                continue
            due = resolved + VERIFY_LIMIT[r["priority"]]
            if not within(due):
                continue
            who = r["verified_by"] or ("patrol" if r["team"] == "supervision" else "supervision")
            o = out.setdefault(who, defaultdict(int))
            o["verify_due"] += 1
            check = at(r["ended_at"]) if r["outcome"] in ("verified", "reworked") else None
            o["checked"] += check is not None
            o["checked_on_time"] += check is not None and check <= due
    return out


def oracle_patrols(truth: dict[str, Any], patrols_text: str) -> dict[str, dict[str, int]]:
    """Per patrol team (the simulator's: patrol-<sub-district>-<n>, walking its whole sub-district, reporting
    the categories of its mix)."""
    from pipeline.simulate.catalog import PATROL_MIX

    teams = re.findall(r"^  (patrol-(\d{9})-\d+):$", patrols_text, flags=re.M)
    out = {team: {"area_filed": 0, "patrol_found": 0, "public_first": 0} for team, _ in teams}
    for c in truth["cases"]:
        if c["kind"] != "problem" or c["category"] not in PATROL_MIX or not within(at(c["first_at"])):
            continue
        for team, sub in teams:
            if c["subdistrict"] == sub:
                out[team]["area_filed"] += 1
                out[team]["patrol_found"] += c["discovered_by"] == "patrol"
                out[team]["public_first"] += c["discovered_by"] == "citizen"
    return out


def test_patrol_teams_equal_the_oracle(simulated: Any, engine: Engine) -> None:
    from pathlib import Path

    from pipeline.reports.patrols import load_patrols

    batch, truth, _, patrols_text = simulated
    engine.write(batch)
    teams = load_patrols(Path("patrols.yaml"), patrols_text)
    got = {u.unit: u.values for u in evaluate(engine.db, "position", Filters(), *MONTH, patrols=teams)
           if u.of == "position.patrol"}
    want = oracle_patrols(truth, patrols_text)
    assert len(want) >= 8 and sum(o["area_filed"] for o in want.values()) > 500
    for team, o in want.items():
        assert {k: got[team][k] for k in o} == o, team
        assert got[team]["miss_rate"] == pytest.approx(o["public_first"] / o["area_filed"])


def test_the_month_has_every_case_kind_the_formulas_distinguish(simulated: Any) -> None:
    _, truth, left_out, _ = simulated
    problems = [c for c in truth["cases"] if c["kind"] == "problem"]
    kinds = {
        "closed on time": sum(1 for c in problems if c["closed_on_time"]),
        "closed late": sum(1 for c in problems if c["status"] == "closed" and not c["closed_on_time"]),
        "open and overdue": sum(1 for c in problems if c["open_overdue"]),
        "reworked": sum(1 for c in problems if c["reworked"]),
        "rejected": sum(1 for c in problems if c["rejected"]),
        "extended": sum(1 for c in problems for r in c["rounds"] if r["extensions"]),
        "verified late": sum(1 for c in problems for r in c["rounds"] if r["outcome"] == "verified"
                             and at(r["ended_at"]) > at(r["resolved_at"]) + VERIFY_LIMIT[r["priority"]]),
        "awaiting verification": sum(1 for c in problems if c["status"] == "resolved"),
    }
    print(f"simulated month: {len(problems)} problem cases compared, {left_out} left out; {kinds}")
    assert all(n > 0 for n in kinds.values()), kinds
    # besides the hot spots' returns, a handful of citizens' cases at a hot spot's cell (they merge with, or are
    # counted in the history of, the returns the worker routed differently)
    assert sum(n for plan, n in left_out.items() if plan != "hotspot") <= 10, left_out


def test_regions_equal_the_oracle(simulated: Any, engine: Engine) -> None:
    batch, truth, _, _ = simulated
    engine.write(batch)
    got = {u.unit: u.values for u in evaluate(engine.db, "region", Filters(), *MONTH)}
    want = oracle_regions(truth)
    assert set(got) == set(want) and len(want) >= 5
    for sub, o in want.items():
        g = got[sub]
        assert (g["received"], g["filed"], g["due"], g["closed"], g["closed_on_time"], g["reworked"]) == (
            o["received"], o["filed"], o["due"], o["closed"], o["closed_on_time"], o["reworked"]), sub
        assert g["close_rate"] == pytest.approx(o["closed"] / o["due"])
        assert g["closed_on_time_rate"] == pytest.approx(o["closed_on_time"] / o["due"])
        assert g["rework_rate"] == pytest.approx(o["reworked"] / o["due"])
        assert g["overdue_unclosed"] == o["due"] - o["closed"]
        assert g["public_report_rate"] == pytest.approx(o["by_public"] / o["filed"])
        assert g["discovery_rate"] == pytest.approx(1 - o["by_public"] / o["filed"])
    assert sum(o["closed"] for o in want.values()) < sum(o["due"] for o in want.values())


def test_departments_and_verifiers_equal_the_oracle(simulated: Any, engine: Engine) -> None:
    batch, truth, _, _ = simulated
    engine.write(batch)
    got = {u.unit: u.values for u in evaluate(engine.db, "department", Filters(), *MONTH)}
    want = oracle_departments(truth)
    assert set(got) == set(want) and {"enforcement", "handling", "supervision"} <= set(got)
    for team, o in want.items():
        g = got[team]
        assert {k: g[k] for k in o} == dict(o), team
        assert g["resolved_on_time_rate"] == pytest.approx(o["resolved_on_time"] / o["due"])
        assert g["rework_rate"] == pytest.approx(o["reworked"] / o["due"])
    got_v = {u.unit: u.values for u in evaluate(engine.db, "position", Filters(), *MONTH)
             if u.of == "position.verifier"}
    want_v = oracle_verifiers(truth)
    assert set(got_v) == set(want_v) == {"supervision", "patrol"}
    for who, o in want_v.items():
        assert {k: got_v[who][k] for k in o} == dict(o), who
        assert got_v[who]["verified_on_time_rate"] == pytest.approx(o["checked_on_time"] / o["verify_due"])


def test_one_subdistrict_alone_equals_its_line_among_all(simulated: Any, engine: Engine) -> None:
    batch, truth, _, _ = simulated
    engine.write(batch)
    want = oracle_regions(truth)
    sub = max(want, key=lambda s: want[s]["filed"])
    alone = evaluate(engine.db, "region", Filters(subdistrict=sub), *MONTH)
    assert [u.unit for u in alone] == [sub] and alone[0].values["filed"] == want[sub]["filed"]
