"""`cityops rules ...`: check, explain and test dispatch rules.

    cityops rules check [FILE ...]                         validate; problems as file:line:column: key: what
    cityops rules explain EVENT.json [--rules FILE] [--history CASES.json]
    cityops rules test [FILE]                              run the YAML rule tests beside a ruleset

More `rules` sub-commands plug in without editing this file: each module named in RULES_COMMAND_MODULES
that exists (e.g. pipeline/reports/backtest.py, which reads ClickHouse) is imported and its
`register(rules_subparsers)` adds its parser.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

from rules.engine import DEFAULT_RULES, load_ruleset
from rules.errors import RulesError
from rules.events import event_from_mapping, parse_time
from rules.recurrence import RecurrenceHistory
from rules.ruletests import report, run_rule_tests, tests_path_for

RULES_COMMAND_MODULES: tuple[str, ...] = ("pipeline.reports.backtest",)


def _check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files or [DEFAULT_RULES]:
        try:
            ruleset = load_ruleset(Path(path))
        except RulesError as err:
            failed = True
            for problem in err.problems:
                print(problem, file=sys.stderr)
            print(
                f"{path}: invalid ({len(err.problems)} problem{'s' * (len(err.problems) != 1)})",
                file=sys.stderr,
            )
            continue
        for warning in ruleset.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"{path}: ok: {ruleset.name} {ruleset.version}, {len(ruleset.rules)} rules, "
            f"{len(ruleset.warnings)} warning{'s' * (len(ruleset.warnings) != 1)}"
        )
    return 1 if failed else 0


def _read_json(name: str) -> object:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    return json.loads(text)


def _explain(args: argparse.Namespace) -> int:
    try:
        ruleset = load_ruleset(Path(args.rules))
    except RulesError as err:
        print(err, file=sys.stderr)
        return 1
    try:
        data = _read_json(args.event)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        event = event_from_mapping(data)
        history = _history(args.history) if args.history else RecurrenceHistory()
    except (OSError, ValueError) as err:
        print(f"{args.event}: {err}", file=sys.stderr)
        return 2
    print(ruleset.explain(event, history).render())
    return 0


def _history(name: str) -> RecurrenceHistory:
    """Earlier cases as a JSON list of {"cell", "category", "at"}."""
    data = _read_json(name)
    if not isinstance(data, list):
        raise ValueError(f"{name}: expected a list of {{cell, category, at}}")
    history = RecurrenceHistory()
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("cell", "category", "at")):
            raise ValueError(f"{name}: item {i}: expected cell, category and at as text")
        history.record(item["cell"], item["category"], parse_time(item["at"]))
    return history


def _test(args: argparse.Namespace) -> int:
    path = Path(args.file)
    tests = path if path.name.endswith(".tests.yaml") else tests_path_for(path)
    try:
        results = run_rule_tests(tests)
    except RulesError as err:
        print(err, file=sys.stderr)
        return 1
    text, ok = report(results, tests)
    print(text)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Add `rules` and its sub-commands; return the `rules` sub-parsers for further commands."""
    p = sub.add_parser("rules", help="check, explain and test the dispatch rules")
    rsub: argparse._SubParsersAction = p.add_subparsers(  # type: ignore[type-arg]
        dest="rules_command", required=True, metavar="RULES_COMMAND"
    )
    check = rsub.add_parser("check", help="validate rules files (default: the shipped ruleset)")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.set_defaults(func=_check)
    explain = rsub.add_parser("explain", help="show the dispatch of one event and every rule considered")
    explain.add_argument("event", metavar="EVENT.json", help="an event as JSON ('-' for stdin)")
    explain.add_argument("--rules", default=str(DEFAULT_RULES), metavar="FILE")
    explain.add_argument("--history", metavar="CASES.json", help="earlier cases: [{cell, category, at}, ...]")
    explain.set_defaults(func=_explain)
    test = rsub.add_parser("test", help="run the rule tests beside a ruleset (FILE.tests.yaml)")
    test.add_argument("file", nargs="?", default=str(DEFAULT_RULES), metavar="FILE")
    test.set_defaults(func=_test)
    for name in RULES_COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(rsub)
    return rsub


def main(argv: list[str] | None = None) -> int:
    """`python -m rules.cli ...` works without the rest of the cityops commands."""
    parser = argparse.ArgumentParser(prog="cityops")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
