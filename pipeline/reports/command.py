"""What every report command shares: the `Command` line of the reports table (pipeline.reports.cli), the
filters and the calendar of the reports (Asia/Shanghai days), running a report on the database with its exit
codes, and the tables of `--compare` and of a trend."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from pipeline.reports.query import KINDS, Filters, Queryable, ReportError, parse_instant
from pipeline.reports.render import Table, plot_trend

T = TypeVar("T")

SHANGHAI = timedelta(hours=8)


@dataclass(frozen=True)
class Command:
    """One report of `cityops report`: its name, one-line help, the description `--help` prints (what it counts
    and the denominator of every rate), how to run it, its own arguments beyond the common filters, and
    optionally how it prints as a table (the default: pipeline.reports.render)."""

    name: str
    help: str
    description: str
    run: Callable[[Queryable, argparse.Namespace], tuple[Table, str]]
    arguments: Callable[[argparse.ArgumentParser], None]
    as_table: Callable[[Table, argparse.Namespace, str], str] | None = None


def add_kind(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=KINDS, default=None, help="problem cases or device faults only (default: both)")


def add_as_of(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as-of", type=parse_instant, default=None, metavar="TIME",
                   help="judge due and overdue at this time (ISO 8601, UTC unless it has an offset; default now)")


def today() -> date:
    """Today in Asia/Shanghai (the reports' calendar)."""
    return (datetime.now(UTC) + SHANGHAI).date()

def parse_day(text: str) -> date:
    """`2024-04-01`, or `30d` / `8w` meaning that many days / weeks before today."""
    t = text.strip()
    try:
        if t[-1:] in ("d", "w") and t[:-1].isdigit():
            return today() - timedelta(days=int(t[:-1]) * (7 if t[-1] == "w" else 1))
        return date.fromisoformat(t)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or a span like 30d or 8w")

def parse_range(text: str) -> tuple[date, date]:
    """`SINCE..UNTIL` (until exclusive)."""
    since, sep, until = text.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a range as SINCE..UNTIL, e.g. 2024-01-01..2024-04-01"
        )
    a, b = parse_day(since), parse_day(until)
    if a >= b:
        raise argparse.ArgumentTypeError(f"{text!r}: the range is empty")
    return a, b

def filters_of(args: argparse.Namespace) -> Filters:
    return Filters(args.since, args.until, args.subdistrict, args.grid, args.cell, args.category, args.team,
                   getattr(args, "kind", None))


def on_database(args: argparse.Namespace, name: str, run: Callable[[Queryable], T]) -> tuple[T | None, int]:
    """Connect (`args.connect`), run `run` on the database and close the connection: (what it returned, 0), or
    (None, the exit code) with the error printed: 2 for the report's own (`ReportError`: bad arguments, nothing
    to report), 1 for the database's (`QueryError`)."""
    from pipeline.sink.transport import QueryError

    db = args.connect()
    try:
        return run(db), 0
    except ReportError as err:
        print(f"report {name}: {err}", file=sys.stderr)
        return None, 2
    except QueryError as err:
        print(f"report {name}: {err}", file=sys.stderr)
        return None, 1
    finally:
        close = getattr(db, "close", None)
        if close is not None:
            close()


def compare_rows(ranges: list[dict[str, Any]], change: dict[str, Any]) -> Table:
    """The table of `--compare`: a row per range (its `range` first), then the row `change` with the change's
    own columns; each row leaves the other kind's columns empty."""
    rows: Table = [{**r, **dict.fromkeys(change)} for r in ranges]
    rows.append({**dict.fromkeys(ranges[0]), "range": "change", **change})
    return rows


def trend_rows(rows: Table, args: argparse.Namespace, title: str) -> None:
    """Rows by period (and by `--by`): the `none` column dropped when not grouped; with `--plot`, the rate drawn
    as a trend per group."""
    if args.by == "none":
        for r in rows:
            del r["none"]
    if args.plot:
        plot_trend(args.plot, rows, "period", "rate", None if args.by == "none" else args.by, title, "share of cases")
