"""Rule tests kept next to a ruleset: YAML cases of event -> expected dispatch, run by `cityops rules test`
and by pytest (tests/rules/test_shipped_rules.py).

    kind: dispatch-rule-tests
    rules: hongkou.yaml                  # relative to this file
    cases:
      - name: vendor at the morning rush  # unique
        event: {source: patrol, category: E0501, at: "2024-05-06T08:10:00+08:00",
                cell: "310109017001003", subdistrict: "310109017", grid_kind: street}
        history:                         # optional: earlier cases in the event's cell (or `cell:` given)
          - {category: E0501, ago: 3d}
        expect: {team: enforcement, priority: 2, sla: 2h, rule: street-vendors-peak-hours,
                 escalate_to: supervision, tags: [street-order], notify: [...]}

`expect` needs `team`; every other key given is checked (`tags` and `notify` must be present, others may be
too). A wrong file gives the usual `file:line:column: key: problem` errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node

from pipeline.model.events import Event
from rules.durations import format_duration
from rules.engine import Dispatch, Ruleset, load_ruleset
from rules.errors import RulesError
from rules.events import event_from_mapping
from rules.nodes import NodeReader, compose_file
from rules.recurrence import RecurrenceHistory

KIND = "dispatch-rule-tests"
_EXPECT_KEYS = ("team", "priority", "sla", "rule", "escalate_to", "notify", "tags")


@dataclass(frozen=True)
class PriorCase:
    cell: str | None  # None: the event's cell
    category: str
    ago: timedelta


@dataclass(frozen=True)
class RuleTestCase:
    name: str
    line: int
    event: Event
    history: tuple[PriorCase, ...]
    expect: dict[str, Any]


@dataclass(frozen=True)
class RuleTestSuite:
    path: Path
    rules_path: Path
    cases: tuple[RuleTestCase, ...]


@dataclass(frozen=True)
class RuleTestResult:
    case: RuleTestCase
    dispatch: Dispatch
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def tests_path_for(rules_path: Path) -> Path:
    """`rules/hongkou.yaml` -> `rules/hongkou.tests.yaml`."""
    return rules_path.with_name(rules_path.stem + ".tests" + rules_path.suffix)


def load_rule_tests(path: Path) -> RuleTestSuite:
    """Parse a rule-tests file; raise RulesError naming each wrong line and key."""
    root = compose_file(path)
    r = NodeReader(str(path))
    top = r.mapping(root, "", allowed=("kind", "rules", "cases"), required=("kind", "rules", "cases"))
    cases: list[RuleTestCase] = []
    rules_path = path
    if top is not None and {"kind", "rules", "cases"} <= set(top):
        if r.text(top["kind"].value, "kind") not in (KIND, None):
            r.problem(top["kind"].value, "kind", f"expected {KIND!r}")
        rules_name = r.text(top["rules"].value, "rules")
        rules_path = path.parent / (rules_name or "")
        names: set[str] = set()
        for item, key in r.items(top["cases"].value, "cases", allow_scalar=False) or []:
            case = _case(r, item, key)
            if case is not None:
                if case.name in names:
                    r.problem(item, key, f"duplicate case name {case.name!r}")
                names.add(case.name)
                cases.append(case)
    r.raise_if_any()
    return RuleTestSuite(path, rules_path, tuple(cases))


def _case(r: NodeReader, node: Node, key: str) -> RuleTestCase | None:
    fields = r.mapping(
        node, key, allowed=("name", "event", "history", "expect"), required=("name", "event", "expect")
    )
    if fields is None or not {"name", "event", "expect"} <= set(fields):
        return None
    name = r.text(fields["name"].value, f"{key}.name")
    key = f"cases[{name}]" if name else key
    try:
        event = event_from_mapping(_plain(fields["event"].value))
    except (ValueError, TypeError) as err:
        r.problem(fields["event"].value, f"{key}.event", str(err))
        return None
    history: list[PriorCase] = []
    if "history" in fields:
        for item, item_key in r.items(fields["history"].value, f"{key}.history", allow_scalar=False) or []:
            entry = r.mapping(
                item, item_key, allowed=("category", "ago", "cell"), required=("category", "ago")
            )
            if entry is None or not {"category", "ago"} <= set(entry):
                continue
            category = r.text(entry["category"].value, f"{item_key}.category")
            ago = r.duration(entry["ago"].value, f"{item_key}.ago")
            cell = r.text(entry["cell"].value, f"{item_key}.cell") if "cell" in entry else None
            if category is not None and ago is not None:
                history.append(PriorCase(cell, category, ago))
    expect = r.mapping(fields["expect"].value, f"{key}.expect", allowed=_EXPECT_KEYS, required=("team",))
    if expect is None or name is None:
        return None
    wanted: dict[str, Any] = {}
    for k, got in expect.items():
        if k == "priority":
            wanted[k] = r.integer(got.value, f"{key}.expect.{k}", 1, 5)
        elif k == "sla":
            wanted[k] = r.duration(got.value, f"{key}.expect.{k}")
        elif k == "escalate_to":
            wanted[k] = None if r.is_null(got.value) else r.text(got.value, f"{key}.expect.{k}")
        elif k in ("notify", "tags"):
            wanted[k] = tuple(v for _, v in r.texts(got.value, f"{key}.expect.{k}") or [])
        else:
            wanted[k] = r.text(got.value, f"{key}.expect.{k}")
    return RuleTestCase(name, node.start_mark.line + 1, event, tuple(history), wanted)


def _plain(node: Node) -> Any:
    """A node as plain Python values (times stay text: the event parser wants ISO strings)."""
    value = yaml.safe_load(yaml.serialize(node))
    return _stringify_times(value)


def _stringify_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify_times(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def run_case(case: RuleTestCase, ruleset: Ruleset) -> RuleTestResult:
    """Dispatch the case's event against a history built from it and compare with `expect`."""
    history = RecurrenceHistory()
    cell = case.event.location.cell if case.event.location else None
    for prior in case.history:
        where = prior.cell or cell
        if where is not None:
            history.record(where, prior.category, case.event.occurred_at - prior.ago)
    d = ruleset.dispatch(case.event, history)
    got: dict[str, Any] = {
        "team": d.team,
        "priority": d.priority,
        "sla": d.sla,
        "rule": d.rule_id,
        "escalate_to": d.escalate_to,
        "notify": d.notify,
        "tags": d.tags,
    }
    failures = []
    for k, want in case.expect.items():
        have = got[k]
        if k in ("notify", "tags"):
            missing = [x for x in want if x not in have]
            if missing:
                failures.append(f"{k}: expected to include {', '.join(missing)}, got [{', '.join(have)}]")
        elif have != want:
            show = format_duration if k == "sla" else str
            failures.append(f"{k}: expected {show(want)}, got {show(have)}")
    return RuleTestResult(case, d, tuple(failures))


def run_rule_tests(path: Path, ruleset: Ruleset | None = None) -> list[RuleTestResult]:
    """Load a tests file and run every case (against its own `rules:` file unless a ruleset is given)."""
    suite = load_rule_tests(path)
    rs = ruleset if ruleset is not None else load_ruleset(suite.rules_path)
    return [run_case(c, rs) for c in suite.cases]


def report(results: list[RuleTestResult], path: Path) -> tuple[str, bool]:
    """The text `cityops rules test` prints, and whether every case passed."""
    lines = []
    for res in results:
        if res.ok:
            lines.append(f"ok    {res.case.name}")
        else:
            for failure in res.failures:
                lines.append(
                    f"FAIL  {path}:{res.case.line}: {res.case.name}: {failure} (rule {res.dispatch.rule_id})"
                )
    failed = sum(1 for r in results if not r.ok)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines), failed == 0


__all__ = [
    "RuleTestCase",
    "RuleTestResult",
    "RuleTestSuite",
    "RulesError",
    "load_rule_tests",
    "report",
    "run_case",
    "run_rule_tests",
    "tests_path_for",
]
