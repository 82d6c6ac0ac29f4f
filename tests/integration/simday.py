"""A simulated district day through real workers, and the oracle of what they stored: the simulator's ground truth
read *through the reports* (how many cases, problems and device faults, who found each first, which hot spots
recur, where each case ended up), and every report's figures over the day, to compare two runs of the same day.

Shared by tests/integration/test_simulated_day.py (the single-node stack, one process per stage) and
tests/cluster/test_day_on_the_cluster.py (the cluster profile, two per stage, against the single node).
"""

from __future__ import annotations

import argparse
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.reports.discovery import discovery
from pipeline.reports.query import Filters
from pipeline.reports.recurrence import hot_spots
from pipeline.simulate import Simulation
from pipeline.simulate.produce import produce_simulation
from pipeline.sink.transport import ClickHouse
from tests.chaos.harness import json_messages, lag
from tests.support import running_worker, wait_for


def run_day(s: Settings, sim: Simulation, tmp_path: Path, ingest: int = 1, cases: int = 1,
            env: dict[str, str] | None = None) -> None:
    """Feed the whole day, then run `ingest` and `cases` processes of the two stages until everything is stored and
    committed and the case transitions stop changing. The topics and schema of `s` must exist.

    The whole day is at the broker before the workers start: they catch up on a backlog of known size, which the
    aligner (pipeline.runtime.align) reads level in event time across the sources, so the stage sees each book's
    reports and team feedback in the order they happened, as the truth does. (Produced at full speed into running
    workers instead, a busy machine fetches a case's closing feedback before a report that came earlier, both
    produced within milliseconds: a race of the test's own making, not of a live district.)"""
    registry = tmp_path / "sensors.csv"
    sim.write_registry(registry)
    env = {"CITYOPS_SENSORS": str(registry), **(env or {})}
    truth = sim.truth.to_json()
    expected_reports = sum(len(c["reports"]) for c in truth["cases"] if c["certain"])
    produce_simulation(s, sim, "max")
    logs = [tmp_path / f"{stage}-{i}.log" for stage, n in (("cases", cases), ("ingest", ingest)) for i in range(n)]
    ch = ClickHouse(s)
    try:
        with ExitStack() as running:
            for log in logs:
                running.enter_context(running_worker(s, log, env, stage=log.name.split("-")[0]))

            def reports_stored() -> bool:
                return int(ch.query_dicts("SELECT uniqExact(event_id) AS n FROM events")[0]["n"]) >= expected_reports

            def tails() -> str:
                return "".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs)
            assert wait_for(reports_stored, timeout_s=300), tails()
            # team feedback trails the reports: wait until both stages have committed all their input (a stage
            # commits only what it has stored), then until the case transitions stop changing
            assert wait_for(lambda: lag(s, s.consumer_groups()) == 0, timeout_s=240, every_s=2), tails()

            def transitions() -> int:
                return int(ch.query_dicts("SELECT count() AS n FROM case_transitions")[0]["n"])
            seen = [-1]
            wait_for(lambda: _settled(transitions, seen), timeout_s=120, every_s=5)
            assert "Traceback" not in tails(), tails()
    finally:
        ch.close()


def check_against_truth(ch: ClickHouse, s: Settings, sim: Simulation) -> None:
    """What the workers stored, read through the reports, is the simulator's truth (a device fault the truth is not
    `certain` of, a silence near the end of the day, may be there or not)."""
    truth = sim.truth.to_json()
    cases = [c for c in truth["cases"] if c["certain"]]
    maybe = [c for c in truth["cases"] if not c["certain"]]
    # every case of the truth is exactly one case: the same reports, merged across sources and grids
    members: dict[str, set[str]] = {}
    for r in ch.query_dicts("SELECT event_id, case_id FROM events FINAL"):
        members.setdefault(r["case_id"], set()).add(r["event_id"])
    got_cases = {frozenset(v): k for k, v in members.items()}
    want_cases = {frozenset(r["event_id"] for r in c["reports"]): c for c in cases}
    may_be = {frozenset(r["event_id"] for r in c["reports"]) for c in maybe}
    missing = [sorted(r) for r in set(want_cases) - set(got_cases)]
    extra = [(got_cases[r], sorted(r)) for r in set(got_cases) - set(want_cases) - may_be]
    assert not missing and not extra, (f"{len(missing)} cases of the truth not stored as such, e.g. {missing[:3]}; "
                                       f"{len(extra)} stored cases not in the truth, e.g. {extra[:3]}")
    stored = {r["case_id"]: r for r in ch.query_dicts(
        "SELECT case_id, discovered_by, cell, status, reopened, reports, team FROM cases FINAL")}
    assert len(cases) <= len(stored) <= len(cases) + len(maybe)
    for reports, c in want_cases.items():
        case = stored[got_cases[reports]]
        assert (case["discovered_by"], case["cell"], case["reports"]) == (
            c["discovered_by"], c["cell"], len(c["reports"]))
    # The simulator addresses its team feedback to the case id the *first* report opens. At full speed the
    # topics are consumed independently, so a later report may be processed first and open the case under
    # its own id; feedback for the other id then waits, parked. Likewise a recurrence rule counts the cell's
    # earlier cases *processed* so far, so a case may go to another team than the truth's, whose feedback is
    # then refused with a reason. Where id and first team agree, the states must agree too.
    dead = json_messages(s, s.topics.deadletter)     # every partition, to its end
    refused = " ".join(d["reason"] for d in dead if d["reason"].startswith("refused:"))
    same = []
    for c in cases:
        case = stored.get(c["case_id"])
        if case is not None and _first_team(ch, c["case_id"]) == c["rounds"][0]["team"]:
            same.append(c)
        elif case is not None:
            assert c["case_id"] in refused or not c["feedback"], c
    assert len(same) > len(cases) // 2
    wrong = [(c["case_id"], c["status"], stored[c["case_id"]]["status"], c["reworked"],
              stored[c["case_id"]]["reopened"]) for c in same
             if (stored[c["case_id"]]["status"], stored[c["case_id"]]["reopened"]) != (c["status"], c["reworked"])]
    if wrong:
        steps = ch.query_dicts("SELECT seq, status, team, actor, reason FROM case_transitions FINAL "
                               "WHERE case_id = %(c)s ORDER BY seq", {"c": wrong[0][0]})
        c = next(x for x in cases if x["case_id"] == wrong[0][0])
        assert not wrong, (wrong[:5], steps, c, [r for r in refused.split("refused:") if wrong[0][0] in r])

    # the discovery report counts the problems (never device faults, §1), by first source
    (row,) = discovery(ch, Filters(), period="all")
    problems = [c for c in cases if c["kind"] == "problem"]
    want = Counter(c["discovered_by"] for c in problems)
    assert (row.total, row.citizen, row.patrol, row.sensor) == (
        len(problems), want["citizen"], want["patrol"], want["sensor"])

    # the hot-spot ranking finds each chronic spot with its number of cases
    spots = {(h.cell, h.category): h.cases for h in hot_spots(ch, Filters(), min_cases=2, limit=500)}
    for h in truth["hotspots"]:
        assert spots.get((h["cell"], h["category"])) == h["cases"], (h, spots)

    # nothing personal reached ClickHouse
    for caller in truth["callers"][:50]:
        hits = _search(ch, caller["name"]) + _search(ch, caller["phone"])
        assert hits == [], (caller, hits)


def report_figures(ch: ClickHouse, sim: Simulation) -> dict[str, Any]:
    """Every report of `cityops report` (pipeline.reports.cli.REPORTS), as the command line runs it, over the days
    of the simulation (Asia/Shanghai), judged as of a fixed time after it: {report and options: its rows}."""
    from pipeline.reports.cli import REPORTS, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    start = sim.config.start
    since = (start + timedelta(hours=8)).date()
    until = since + timedelta(days=int(sim.config.days) + 2)
    as_of = (start + timedelta(days=sim.config.days + 1)).isoformat()
    variants = {"discovery": [["--period", "day"], ["--period", "all", "--by", "subdistrict"]],
                "recurrence": [["--period", "all", "--by", "grid"],
                               ["--hot-spots", "--min-cases", "2", "--limit", "500"]],
                "sla": [[]], "workload": [[]], "health": [["--limit", "500"]],
                "evaluation": [["--of", of] for of in ("region", "department", "position")]}
    assert set(variants) == set(REPORTS), "a new report: add it here"
    out: dict[str, Any] = {}
    for name, options in variants.items():
        for extra in options:
            argv = ["report", name, "--since", since.isoformat(), "--until", until.isoformat(), *extra]
            if "--as-of" in _options(parser, name):
                argv += ["--as-of", as_of]
            args = parser.parse_args(argv)
            rows, _ = REPORTS[name].run(ch, args)
            out[" ".join([name, *extra])] = rows
    return out


def _options(parser: argparse.ArgumentParser, report: str) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["report"]
    rep = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[report]
    return set(rep._option_string_actions)


def _search(ch: ClickHouse, needle: str) -> list[Any]:
    rows = ch.query_dicts(
        "SELECT event_id FROM events WHERE position(description, %(n)s) > 0 OR position(event_id, %(n)s) > 0 "
        "LIMIT 3", {"n": needle})
    return [r["event_id"] for r in rows]


def _settled(count: Any, seen: list[int]) -> bool:
    """True when `count()` gives the same value as at the previous call (polled every few seconds)."""
    now = count()
    same = now == seen[0]
    seen[0] = now
    return same


def _first_team(ch: ClickHouse, case_id: str) -> str:
    rows = ch.query_dicts("SELECT team FROM case_transitions FINAL WHERE case_id = %(c)s AND status = 'dispatched' "
                          "ORDER BY seq LIMIT 1", {"c": case_id})
    return str(rows[0]["team"]) if rows else ""

