"""`cityops rules backtest CANDIDATE.yaml --since 30d`: the command of rules.backtest, run on the cases stored in
ClickHouse. The routing comparison itself is rules.backtest (rules/ import only the vocabulary); this module reads
the stored cases and prints the report. `rules.cli` adds it to the `rules` sub-commands by name."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import Settings
from pipeline.sink.transport import ClickHouse, QueryError, quiet_driver_logs
from rules.backtest import (
    FORMATS,
    backtest,
    load_cases,
    longest_recurrence_window,
    render_csv,
    render_table,
    to_json,
)
from rules.durations import parse_duration
from rules.engine import DEFAULT_RULES, Ruleset, load_ruleset
from rules.errors import RulesError


def _run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    rulesets: list[Ruleset] = []
    for path in (args.candidate, args.against):
        try:
            rulesets.append(load_ruleset(Path(path)))
        except RulesError as err:
            problems += err.problems
        except OSError as err:
            problems.append(f"{path}: {err.strerror or err}")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"backtest refused: {len(problems)} problem{'s' * (len(problems) != 1)}", file=sys.stderr)
        return 2
    candidate, current = rulesets
    try:
        window = parse_duration(args.since)
    except ValueError as err:
        print(f"--since: {err}", file=sys.stderr)
        return 2
    until = datetime.now(UTC).replace(microsecond=0)
    since = until - window
    warmup = longest_recurrence_window(current, candidate)
    quiet_driver_logs()
    db = ClickHouse(Settings.from_env())
    try:
        cases = load_cases(db, since - warmup, until)
    except QueryError as err:
        print(err, file=sys.stderr)
        return 1
    finally:
        db.close()
    report = backtest(cases, current, candidate, since, until, args.examples)
    if args.format == "json":
        print(json.dumps(to_json(report), ensure_ascii=False, indent=2))
    elif args.format == "csv":
        sys.stdout.write(render_csv(report))
    else:
        print(render_table(report))
    return 0


def register(rsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `cityops rules backtest` to the `rules` sub-commands."""
    p = rsub.add_parser("backtest", help="route stored cases with a candidate ruleset and show what would change")
    p.add_argument("candidate", metavar="RULES.yaml", help="the candidate ruleset")
    p.add_argument("--since", default="30d", help="window of case openings, a duration back from now (30d, 1w)")
    p.add_argument("--against", default=str(DEFAULT_RULES), metavar="FILE",
                   help="the current ruleset to compare with (default: the shipped one)")
    p.add_argument("--examples", type=int, default=5, metavar="N", help="examples per team change (default 5)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=_run)

