"""What every report command shares: the `Command` line of the reports table (pipeline.reports.cli), the
filters and the calendar of the reports (Asia/Shanghai days)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pipeline.reports.query import KINDS, Filters, Queryable, parse_instant
from pipeline.reports.render import Table

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
