"""Dispatch results, explain output, hot reload, the naive baseline and the shipped rule tests."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.bench.rules import generate_events, month_of_history
from rules.backtest import StoredCase, backtest
from rules.cli import main as cli_main
from rules.engine import DEFAULT_RULES, RulesHolder, load_ruleset
from rules.naive import NaiveRuleset
from rules.recurrence import RecurrenceCounter, RecurrenceHistory
from rules.ruletests import load_rule_tests, run_case
from rules.ruletests import tests_path_for as rule_tests_beside
from tests.rules.factories import AT, event, rules_file

TWO_RULES = """\
- id: vendors
  order: 10
  when: {category: E0501}
  then: {team: enforcement, priority: 2, sla: 2h, notify: [squad-3], tags: [street-order]}
- id: noise
  order: 20
  when: {any: [{category: E0508}, {keywords: [噪音]}]}
  then: {team: supervision}
"""


def test_dispatch_fields_come_from_rule_and_team_defaults(tmp_path: Path) -> None:
    ruleset = load_ruleset(rules_file(tmp_path, TWO_RULES))
    d = ruleset.dispatch(event(category="E0501"))
    assert (d.team, d.priority, d.sla, d.escalate_to, d.notify, d.tags, d.rule_id) == (
        "enforcement", 2, timedelta(hours=2), "supervision", ("squad-3",), ("street-order",), "vendors")
    assert d.due_at == AT + timedelta(hours=2)
    assert d.ruleset_version == ruleset.version and ruleset.version.startswith("t1+")
    assert d.reason == "rule vendors (order 10): category is E0501"
    later = AT + timedelta(days=1)
    assert ruleset.dispatch(event(category="E0501"), now=later).due_at == later + timedelta(hours=2)


def test_reason_names_the_branch_that_matched(tmp_path: Path) -> None:
    ruleset = load_ruleset(rules_file(tmp_path, TWO_RULES))
    d = ruleset.dispatch(event(category="E0102", description="半夜噪音"))
    assert (d.team, d.priority, d.sla, d.escalate_to) == ("supervision", 3, timedelta(hours=72), None)
    assert d.reason == "rule noise (order 20): description mentions '噪音'"


def test_unlocated_event_gets_the_default(tmp_path: Path) -> None:
    ruleset = load_ruleset(rules_file(tmp_path, TWO_RULES))
    d = ruleset.dispatch(event(category="P0101", located=False))
    assert (d.team, d.rule_id, d.reason) == ("handling", "default", "no rule matched: default route")


def test_batch_equals_single_dispatch_and_unknown_category_still_routes() -> None:
    ruleset = load_ruleset()
    events = generate_events(400, seed=3) + [event(category="E0000")]
    history = month_of_history(events[:200])
    assert ruleset.dispatch_batch(events, history) == [ruleset.dispatch(e, history) for e in events]


def test_explain_names_the_rule_and_every_rule_considered(tmp_path: Path) -> None:
    ruleset = load_ruleset(rules_file(tmp_path, TWO_RULES))
    explanation = ruleset.explain(event(category="E0508"))
    assert [(t.rule_id, t.matched, t.chosen) for t in explanation.rules] == [
        ("vendors", False, False), ("noise", True, True), ("default", True, False)]
    text = explanation.render()
    assert "-> supervision" in text and "rule: noise" in text
    assert "- vendors (order 10): no match" in text and "[ ] category is E0501   (event: category=E0508)" in text
    assert "- noise (order 20): CHOSEN" in text


def test_cli_explain_prints_the_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ev.json"
    path.write_text('{"source": "hotline", "category": "E0508", "occurred_at": "2024-05-06T23:40:00+08:00", '
                    '"request_type": "complaint", "cell": "310109014002001", "subdistrict": "310109014", '
                    '"grid_kind": "residential"}', encoding="utf-8")
    assert cli_main(["rules", "explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "-> supervision" in out and "rule: night-noise" in out and "- night-noise (order 70): CHOSEN" in out


def test_cli_explain_shows_a_fault_kept_from_the_emergency_rules(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A `-1` from a pipe-pressure gauge explains as device-fault, with every problem rule refusing the fault."""
    path = tmp_path / "ev.json"
    path.write_text('{"source": "iot", "category": "E0402", "sensor_type": "pipe_pressure", "value": -1, '
                    '"fault": "error", "scope": "area", "occurred_at": "2024-05-06T09:00:00+08:00", '
                    '"cell": "310109017003001", "subdistrict": "310109017", "grid_kind": "street"}', encoding="utf-8")
    assert cli_main(["rules", "explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "-> handling (priority 3, SLA 1d" in out and "rule: device-fault" in out
    assert "reason: rule device-fault (order 5): fault is any" in out
    assert "- device-fault (order 5): CHOSEN" in out and "- emergencies (order 46): no match" in out
    emergencies = out[out.index("- emergencies (order 46)"):].splitlines()
    assert emergencies[1] == ("    [ ] a problem (rules without `fault` never route device faults)   "
                              "(event: fault=error)")
    assert emergencies[2] == "    [x] category in E04*   (event: category=E0402)"


def test_explain_of_a_problem_shows_the_fault_rule_not_matching() -> None:
    """For a problem, a `fault` rule is no candidate and its `fault` line is unticked."""
    explanation = load_ruleset().explain(event(source="iot", category="E0499", sensor_type="smoke", value=12.0))
    first = explanation.rules[0]
    assert (first.rule_id, first.candidate, first.matched) == ("device-fault", False, False)
    assert first.lines == ("[ ] fault is any   (event: fault=None)",)
    assert explanation.dispatch.rule_id == "smoke-alarm"


def test_backtest_history_counts_problems_only(tmp_path: Path) -> None:
    """A backtest's recurrence history holds the problem cases it replays, never a device fault (§5.1)."""
    ruleset = load_ruleset(rules_file(tmp_path, """\
        - id: repeat
          order: 1
          when: {recurrence: {within: 30d, count: ">= 1"}}
          then: {team: supervision}
        """))
    cases = [StoredCase("C1", event(source="iot", at=AT, fault="stuck"), "handling", "default"),
             StoredCase("C2", event(at=AT + timedelta(hours=1)), "handling", "default"),
             StoredCase("C3", event(at=AT + timedelta(hours=2)), "supervision", "repeat")]
    report = backtest(cases, ruleset, ruleset, AT, AT + timedelta(days=1))
    assert report.rules == {("default", "default"): 2, ("repeat", "repeat"): 1}


def test_cli_check_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = rules_file(tmp_path, "- {id: a, order: 1, then: {team: nobody}}\n")
    assert cli_main(["rules", "check", str(DEFAULT_RULES), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "hongkou.yaml: ok: hongkou" in captured.out
    assert f"{bad}:" in captured.err and "rules[a].then.team: unknown team 'nobody'" in captured.err


def test_cli_runs_the_shipped_rule_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["rules", "test"]) == 0
    assert " 0 failed" in capsys.readouterr().out


def test_rule_test_failure_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = rules_file(tmp_path, TWO_RULES)
    tests = rule_tests_beside(rules)
    tests.write_text("kind: dispatch-rule-tests\nrules: r.yaml\ncases:\n"
                     "  - name: vendor\n    event: {source: patrol, category: E0501, at: '2024-05-06T10:00:00Z'}\n"
                     "    expect: {team: handling, sla: 2h}\n", encoding="utf-8")
    assert cli_main(["rules", "test", str(rules)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {tests}:4: vendor: team: expected handling, got enforcement (rule vendors)" in out


SUITE = load_rule_tests(rule_tests_beside(DEFAULT_RULES))


@pytest.mark.parametrize("case", SUITE.cases, ids=[c.name for c in SUITE.cases])
def test_shipped_rule_case(case: object) -> None:
    """Each case of rules/hongkou.tests.yaml holds."""
    from rules.ruletests import RuleTestCase
    assert isinstance(case, RuleTestCase)
    result = run_case(case, load_ruleset())
    assert result.ok, result.failures


def test_shipped_tests_cover_all_teams_sources_and_major_classes() -> None:
    ruleset = load_ruleset()
    teams = {run_case(c, ruleset).dispatch.team for c in SUITE.cases}
    assert teams == {"enforcement", "handling", "supervision"}
    assert {c.event.source for c in SUITE.cases} == {"hotline", "patrol", "iot"}
    majors = {c.event.category[:3] for c in SUITE.cases}
    assert {"E01", "E02", "E03", "E04", "E05", "P01", "P02", "P03", "P04"} <= majors


def test_naive_interpreter_agrees_with_compiled_engine() -> None:
    """On a generated sample, the baseline reaches the same decisions (all but the reason text)."""
    events = generate_events(1500, seed=11)
    history = month_of_history(events[:750])
    compiled = load_ruleset().dispatch_batch(events, history)
    naive = NaiveRuleset(DEFAULT_RULES).dispatch_batch(events, history)
    key = ("team", "priority", "sla", "due_at", "escalate_to", "notify", "tags", "rule_id")
    assert [tuple(getattr(d, k) for k in key) for d in compiled] == [tuple(getattr(d, k) for k in key)
                                                                      for d in naive]
    assert len({d.rule_id for d in compiled}) > 20   # the sample exercises most rules


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_hot_reload_swaps_to_a_valid_new_version(tmp_path: Path) -> None:
    path = rules_file(tmp_path, TWO_RULES)
    holder = RulesHolder(path)
    old = holder.current
    assert holder.maybe_reload() is False
    path.write_text(path.read_text().replace("team: enforcement, priority: 2", "team: handling, priority: 1"))
    _touch_later(path)
    assert holder.maybe_reload() is True
    assert holder.current is not old and holder.current.version != old.version
    d = holder.current.dispatch(event(category="E0501"))
    assert (d.team, d.ruleset_version) == ("handling", holder.current.version)
    assert holder.reloads == 1 and holder.refusals == 0 and holder.last_error is None


def test_refused_hot_reload_keeps_the_old_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = rules_file(tmp_path, TWO_RULES)
    holder = RulesHolder(path)
    old = holder.current
    path.write_text(path.read_text().replace("sla: 2h", "sla: soon"))
    _touch_later(path)
    with caplog.at_level(logging.WARNING, logger="cityops.rules"):
        assert holder.maybe_reload() is False
    assert holder.current is old
    assert holder.current.dispatch(event(category="E0501")).team == "enforcement"
    assert holder.refusals == 1 and holder.last_error is not None and "bad duration 'soon'" in holder.last_error
    assert holder.status()["refusing"] is True and holder.metrics()["cityops_rules_reload_refusals_total"] == 1
    assert any("rules reload refused, keeping version" in r.getMessage() for r in caplog.records)
    assert holder.maybe_reload() is False and holder.refusals == 1   # unchanged file: not re-read
    path.write_text(path.read_text().replace("sla: soon", "sla: 3h"))
    _touch_later(path)
    assert holder.maybe_reload() is True and holder.last_error is None
    assert holder.current.dispatch(event(category="E0501")).sla == timedelta(hours=3)


def test_deleted_rules_file_is_refused(tmp_path: Path) -> None:
    path = rules_file(tmp_path, TWO_RULES)
    holder = RulesHolder(path)
    old = holder.current
    shutil.move(path, tmp_path / "gone.yaml")
    assert holder.maybe_reload() is False and holder.current is old and holder.refusals == 1


def test_history_counts_match_a_brute_force_count() -> None:
    """RecurrenceHistory.count equals a linear scan over the recorded cases, for exact codes and prefixes."""
    import random
    rnd = random.Random(5)
    cases = [(f"c{rnd.randrange(6)}", rnd.choice(["E0501", "E0504", "E0102", "P0101"]),
              datetime(2024, 5, 1, tzinfo=UTC) + timedelta(hours=rnd.randrange(24 * 40))) for _ in range(3000)]
    history = RecurrenceHistory()
    for cell, code, at in cases:
        history.record(cell, code, at)
    counter: RecurrenceCounter = history
    for _ in range(300):
        cell, at = f"c{rnd.randrange(7)}", datetime(2024, 5, 1, tzinfo=UTC) + timedelta(hours=rnd.randrange(960))
        pattern, window = rnd.choice(["E0501", "E05*", "E*", "P0101", "X*"]), timedelta(days=rnd.randrange(1, 31))
        want = sum(1 for c, code, t in cases if c == cell and at - window <= t <= at and (
            code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern))
        assert counter.count(cell, pattern, window, at) == want
    cutoff = datetime(2024, 5, 20, tzinfo=UTC)
    dropped = history.prune(cutoff)
    assert dropped == sum(1 for _, _, t in cases if t < cutoff) and len(history) == len(cases) - dropped
