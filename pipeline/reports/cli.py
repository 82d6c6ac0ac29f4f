"""`cityops report discovery | recurrence | sla | workload | health | evaluation | bulletin`: the reports on the
command line (evaluation and bulletin: pipeline.reports.evaluation_cli).

Common options: the filters (`--since`, `--until`: a date `2024-04-01` or a span back from today `30d`;
`--subdistrict`, `--grid`, `--cell`, `--category` code or prefix, `--team`), `--format table|csv|json` and
`--plot FILE.png`. Every value goes to the database as a bound parameter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import Settings
from pipeline.reports.command import Command, on_database, parse_day, parse_range, today
from pipeline.reports.commands import discovery, health, recurrence, sla, workload
from pipeline.reports.evaluation_cli import BULLETIN_DESCRIPTION, run_bulletin
from pipeline.reports.evaluation_cli import COMMAND as EVALUATION
from pipeline.reports.query import Queryable, parse_instant
from pipeline.reports.render import render

__all__ = ["REPORTS", "parse_day", "parse_range", "register", "today"]

# The reports of `cityops report`, in the order of --help: a new report is its module and one line here.
REPORTS: dict[str, Command] = {c.name: c for c in (
    discovery.COMMAND,
    recurrence.COMMAND,
    sla.COMMAND,
    workload.COMMAND,
    health.COMMAND,
    EVALUATION,
)}


def _connect() -> Queryable:
    from pipeline.sink.transport import ClickHouse

    return ClickHouse(Settings.from_env(), any_node=True)



def _run(args: argparse.Namespace) -> int:
    from pipeline.sink.transport import quiet_driver_logs

    quiet_driver_logs()
    command = REPORTS[args.report]
    done, code = on_database(args, args.report, lambda db: command.run(db, args))
    if done is None:
        return code
    rows, title = done
    if command.as_table is not None and args.format == "table":
        sys.stdout.write(command.as_table(rows, args, title))
    else:
        sys.stdout.write(render(rows, args.format, title))
    if args.plot:
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0



def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    g.add_argument("--since", type=parse_day, help="first day (YYYY-MM-DD or 30d), Asia/Shanghai")
    g.add_argument("--until", type=parse_day, help="day after the last (exclusive)")
    g.add_argument("--subdistrict", help="sub-district code, e.g. 310109009")
    g.add_argument("--grid", help="management grid code (12 digits) or a cell-code prefix")
    g.add_argument("--cell", help="unit cell code (15 digits)")
    g.add_argument("--category", help="category code or prefix, e.g. E0501 or E05")
    g.add_argument("--team", help="enforcement | handling | supervision")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw a chart into this PNG file")
    p.set_defaults(func=_run, connect=_connect, as_of=None, limit=20)



def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cityops report ...`."""
    report = sub.add_parser("report", help="analysts' reports from ClickHouse")
    rsub = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    for command in REPORTS.values():
        p = rsub.add_parser(command.name, help=command.help, description=f"{command.help}.\n\n{command.description}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p)
        command.arguments(p)
    b = rsub.add_parser("bulletin", help="绩效通报: the month's evaluation as a printable document (HTML + PDF)",
                        description=BULLETIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = b.add_argument_group("filters")
    g.add_argument("--subdistrict", help="sub-district code, e.g. 310109009")
    g.add_argument("--grid", help="management grid code (12 digits) or a cell-code prefix")
    g.add_argument("--cell", help="unit cell code (15 digits)")
    g.add_argument("--category", help="category code or prefix, e.g. E0501 or E05")
    b.add_argument("--month", required=True, help="the month, YYYY-MM (Asia/Shanghai)")
    b.add_argument("--out", type=Path, default=Path("."), help="directory for bulletin-YYYY-MM.html / .pdf")
    b.add_argument("--no-pdf", action="store_true", help="write the HTML only")
    b.add_argument("--weights", type=Path, help="weights and grade bands (default: the shipped file)")
    b.add_argument("--as-of", type=parse_instant, default=None, metavar="TIME",
                   help="judge closed / resolved / verified at this time (default: the month's end, or now)")
    b.set_defaults(func=run_bulletin, connect=_connect)
