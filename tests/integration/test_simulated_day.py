"""A simulated district day through the real stack, checked against the simulator's ground truth *through the
reports*: how many cases (problems and device faults), who found each first, which hot spots recur, and where
each case ended up. The truth (format 2) follows docs/cases.md; a device fault it is not `certain` of (a silence
near the end of the day) may be raised or not."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings, Topics
from pipeline.reports.discovery import discovery
from pipeline.reports.query import Filters
from pipeline.reports.recurrence import hot_spots
from pipeline.runtime.topics import ensure_topics
from pipeline.simulate.config import SimConfig
from pipeline.simulate.generate import simulate
from pipeline.simulate.produce import produce_simulation
from pipeline.sink.migrate import migrate
from pipeline.sink.transport import ClickHouse
from tests.chaos.harness import json_messages, lag
from tests.support import running_worker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def test_simulated_day_matches_its_truth(tmp_path: Path) -> None:
    tag = "s" + uuid.uuid4().hex[:10]
    base = Settings.from_env()
    s = replace(base, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp_path)
    ensure_topics(s)
    migrate(s)
    sim = simulate(SimConfig(days=1, seed=11, sensors=300, hotline_per_day={"310109": 400}).checked())
    truth = sim.truth.to_json()
    registry = tmp_path / "sensors.csv"
    sim.write_registry(registry)
    env = {"CITYOPS_SENSORS": str(registry)}
    ch = ClickHouse(s)
    cases = [c for c in truth["cases"] if c["certain"]]
    maybe = [c for c in truth["cases"] if not c["certain"]]
    expected_reports = sum(len(c["reports"]) for c in cases)
    # the whole day is at the broker before the workers start: they catch up on a backlog of known size, which
    # the aligner (pipeline.runtime.align) reads level in event time across the sources, so the stage sees each book's
    # reports and team feedback in the order they happened, as the truth does. (Produced at full speed into
    # running workers instead, a busy machine fetches a case's closing feedback before a report that came
    # earlier, both produced within milliseconds: a race of the test's own making, not of a live district.)
    produce_simulation(s, sim, "max")
    try:
        with running_worker(s, tmp_path / "cases.log", env, stage="cases"), \
                running_worker(s, tmp_path / "ingest.log", env, stage="ingest"):

            def reports_stored() -> bool:
                n = ch.query_dicts("SELECT uniqExact(event_id) AS n FROM events")[0]["n"]
                return int(n) >= expected_reports

            logs = lambda: (tmp_path / "ingest.log").read_text()[-2000:] + (tmp_path / "cases.log").read_text()[-2000:]  # noqa: E731
            assert wait_for(reports_stored, timeout_s=300), logs()
            # team feedback trails the reports: wait until both stages have committed all their input (a stage
            # commits only what it has stored), then until the case transitions stop changing
            assert wait_for(lambda: lag(s, s.consumer_groups()) == 0, timeout_s=240, every_s=2), logs()

            def transitions() -> int:
                return int(ch.query_dicts("SELECT count() AS n FROM case_transitions")[0]["n"])
            seen = [-1]
            wait_for(lambda: _settled(transitions, seen), timeout_s=120, every_s=5)

        # every case of the truth is exactly one case: the same reports, merged across sources and grids
        members: dict[str, set[str]] = {}
        for r in ch.query_dicts("SELECT event_id, case_id FROM events FINAL"):
            members.setdefault(r["case_id"], set()).add(r["event_id"])
        got_cases = {frozenset(v): k for k, v in members.items()}
        want_cases = {frozenset(r["event_id"] for r in c["reports"]): c for c in cases}
        may_be = {frozenset(r["event_id"] for r in c["reports"]) for c in maybe}
        assert set(want_cases) <= set(got_cases) and set(got_cases) - set(want_cases) <= may_be
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
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")


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
