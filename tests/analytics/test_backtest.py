"""`cityops rules backtest`: stored first reports routed by a candidate and the current ruleset."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.model.records import CaseRow, EventRow, SinkBatch
from rules.backtest import longest_recurrence_window
from rules.cli import main as rules_main
from rules.engine import load_ruleset

HEADER = """\
version: "{version}"
kind: dispatch-rules
name: backtest-test
teams:
  enforcement: {{sla: 24h, priority: 2}}
  handling: {{sla: 48h, priority: 3}}
  supervision: {{sla: 72h, priority: 3}}
rules:
"""
# current: street-order events (E05*) to enforcement; a third report of a part in a cell within 30 days to
# supervision; everything else to handling
CURRENT = """\
  - id: street-order
    order: 10
    when: {category: "E05*"}
    then: {team: enforcement}
  - id: chronic-part
    order: 20
    when: {category: "P*", recurrence: {category: same, within: 30d, count: ">= 2"}}
    then: {team: supervision}
"""
# candidate: unlicensed vendors (E0501) go to handling with a 12 h SLA, the rest as before
CANDIDATE = """\
  - id: vendors-to-handling
    order: 5
    when: {category: E0501}
    then: {team: handling, sla: 12h, priority: 1}
""" + CURRENT
CATEGORIES = ("E0501", "E0502", "P0101", "E0102")


def write_rules(tmp: Path, name: str, version: str, rules: str) -> Path:
    path = tmp / name
    path.write_text(HEADER.format(version=version) + rules + "default: {team: handling}\n", encoding="utf-8")
    return path


def history(now: datetime) -> tuple[SinkBatch, list[EventRow]]:
    """Cases over the last 40 days in 4 cells, each with its first report and some merged reports; the
    stored team of every case is 'handling' (whatever the rules say: the backtest must not read it as a
    routing). Returns the batch and the first reports."""
    rnd = random.Random(11)
    cells = [f"310109009001{i:03d}" for i in range(1, 5)]
    batch = SinkBatch()
    firsts: list[EventRow] = []
    for i in range(160):
        at = (now - timedelta(days=40) + timedelta(seconds=rnd.randrange(40 * 86400))).replace(microsecond=0)
        cell, category = rnd.choice(cells), rnd.choice(CATEGORIES)
        case_id = f"case-{i:04d}"
        source = rnd.choice(("hotline", "patrol", "iot"))
        first = EventRow(f"{source}:{i}", source, case_id, category, cell, "310109009", at, at, 121.49, 31.27,
                         False, False, "hongkou-g1", "street", "complaint" if source == "hotline" else "",
                         "", None, "占道 stall 摊位")
        firsts.append(first)
        batch.events.append(first)
        for k in range(rnd.randrange(3)):   # later reports merged into the case: never routed again
            batch.events.append(EventRow(f"patrol:{i}-{k}", "patrol", case_id, category, cell, "310109009",
                                         at + timedelta(hours=k + 1), at, 121.49, 31.27, False, True, "hongkou-g1",
                                         "street"))
        batch.cases.append(CaseRow(case_id, category, "citizen", cell, "310109009", "street", "handling",
                                   "dispatched", 3, at, at + timedelta(hours=48), None, 1, (source,), 0,
                                   "stored-rule", "v0", "hongkou-g1", 1))
    return batch, firsts


def expected_routes(firsts: list[EventRow], since: datetime) -> tuple[Counter[tuple[str, str]],
                                                                       Counter[tuple[str, str]]]:
    """The two rulesets re-stated in plain Python: (old team, new team) and (old rule, new rule) counts."""
    ordered = sorted(firsts, key=lambda e: (e.received_at, e.event_id))
    teams: Counter[tuple[str, str]] = Counter()
    rules: Counter[tuple[str, str]] = Counter()
    for i, e in enumerate(ordered):
        if e.received_at < since:
            continue
        earlier = sum(1 for p in ordered[:i] if p.cell == e.cell and p.category == e.category
                      and e.received_at - timedelta(days=30) <= p.received_at <= e.received_at)
        if e.category.startswith("E05"):
            old = ("enforcement", "street-order")
        elif e.category.startswith("P") and earlier >= 2:
            old = ("supervision", "chronic-part")
        else:
            old = ("handling", "default")
        new = ("handling", "vendors-to-handling") if e.category == "E0501" else old
        teams[old[0], new[0]] += 1
        rules[old[1], new[1]] += 1
    return teams, rules


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = rules_main(["rules", "backtest", *args])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.clickhouse
def test_backtest_counts_match_an_independent_replay(isolated_settings: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Team and rule changes over the window equal the counts of a plain-Python replay of both rulesets
    (first reports only, recurrence counted over earlier cases including those before the window)."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink

    migrate(isolated_settings)
    monkeypatch.setenv("CITYOPS_CLICKHOUSE_DATABASE", isolated_settings.clickhouse_database)
    now = datetime.now(UTC).replace(microsecond=0)
    batch, firsts = history(now)
    sink = ClickHouseSink(isolated_settings)
    sink.write(batch)
    sink.close()
    current = write_rules(tmp_path, "current.yaml", "c1", CURRENT)
    candidate = write_rules(tmp_path, "candidate.yaml", "c2", CANDIDATE)

    rc, out, err = run_cli(str(candidate), "--against", str(current), "--since", "20d", "--format", "json")
    assert rc == 0, err
    report = json.loads(out)
    # the command's window ends when it runs, a moment after `now`: no stored case falls in between
    since = datetime.fromisoformat(report["since"])
    teams, rules = expected_routes(firsts, since)
    assert report["cases"] == sum(teams.values()) > 0
    assert {(p["from"], p["to"]): p["cases"] for p in report["teams"]} == dict(teams)
    assert {(p["from"], p["to"]): p["cases"] for p in report["rules"]} == dict(rules)
    assert report["moved"] == teams["enforcement", "handling"]
    assert report["stored_agrees"] == sum(n for (old, _), n in teams.items() if old == "handling")
    slas = {(p["from"], p["to"]): p["cases"] for p in report["sla"]}
    assert slas["1d", "12h"] == teams["enforcement", "handling"]      # 24h is written 1d
    assert rules["default", "default"] and ("supervision", "supervision") in teams   # recurrence mattered
    moved = {e.case_id for e in firsts if e.category == "E0501" and e.received_at >= since}
    assert report["examples"] and all(x["case_id"] in moved for x in report["examples"])
    assert {(x["old_team"], x["new_team"], x["new_rule"]) for x in report["examples"]} == {
        ("enforcement", "handling", "vendors-to-handling")}

    rc, table, _ = run_cli(str(candidate), "--against", str(current), "--since", "20d")
    assert rc == 0 and f"{report['moved']} cases change team" in table and "vendors-to-handling" in table
    rc, text, _ = run_cli(str(candidate), "--against", str(current), "--since", "20d", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rc == 0
    assert {(r["from"], r["to"]): int(r["cases"]) for r in rows if r["section"] == "teams"} == dict(teams)


def test_an_invalid_candidate_is_refused_with_its_problems(tmp_path: Path) -> None:
    """A candidate with a wrong key exits 2 naming file:line:column and key, before touching the database."""
    bad = write_rules(tmp_path, "bad.yaml", "b1", "  - id: x\n    order: 1\n    when: {categroy: E0501}\n"
                                                  "    then: {team: handling}\n")
    line = bad.read_text(encoding="utf-8").splitlines().index("    when: {categroy: E0501}") + 1
    rc, out, err = run_cli(str(bad))
    assert rc == 2 and out == ""
    assert f"{bad}:{line}:" in err and "rules[x].when.categroy" in err


def test_warm_up_reaches_back_the_longest_recurrence_window(tmp_path: Path) -> None:
    """Cases before the window are replayed for recurrence counts as far back as any rule looks."""
    current = load_ruleset(write_rules(tmp_path, "c.yaml", "c1", CURRENT))
    plain = load_ruleset(write_rules(tmp_path, "p.yaml", "p1", "  - id: a\n    order: 1\n    when: {source: iot}\n"
                                                             "    then: {team: handling}\n"))
    assert longest_recurrence_window(current, plain) == timedelta(days=30)
    assert longest_recurrence_window(plain) == timedelta(0)
