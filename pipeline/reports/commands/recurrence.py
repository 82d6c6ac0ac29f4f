"""`cityops report recurrence`: recurrence on the command line."""

from __future__ import annotations

import argparse

from pipeline.reports import (
    hot_spots,
    recurrence,
    recurrence_change,
)
from pipeline.reports.command import Command, compare_rows, filters_of, parse_range, trend_rows
from pipeline.reports.query import DIMENSIONS, PERIODS, Queryable
from pipeline.reports.render import Table, category_label, place_label, plot_bars

DESCRIPTION = """\
A problem case is recurrent when an earlier problem case of the same category in the same cell was closed
before it was created and at most --within-days days before; counted per return, whatever the linkage.
  rate = recurrent / located problem cases created in the range
--hot-spots ranks cell x category by problem cases in the range (returns included), then recurrent cases."""


def run_recurrence(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    f = filters_of(args)
    if args.hot_spots:
        spots = hot_spots(db, f, args.min_cases, args.within_days, args.limit)
        rows: Table = [
            {
                "rank": s.rank,
                "cell": s.cell,
                "category": s.category,
                "subdistrict": s.subdistrict,
                "cases": s.cases,
                "recurrent": s.recurrent,
                "first_day": s.first_day,
                "last_day": s.last_day,
            }
            for s in spots
        ]
        if args.plot:
            plot_bars(
                args.plot,
                [f"{place_label(s.cell)} {category_label(s.category)}" for s in spots],
                [float(s.cases) for s in spots],
                f"Chronic hot spots (at least {args.min_cases} cases)",
                "cases",
            )
        return rows, f"Hot spots: cell x category with at least {args.min_cases} cases"
    if args.compare:
        ch = recurrence_change(db, args.compare[0], args.compare[1], f, args.within_days)
        rows = compare_rows([{"range": r.key, "cases": r.cases, "recurrent": r.recurrent, "rate": r.rate}
                             for r in (ch.before, ch.after)], {"relative_change": ch.change})
        if args.plot:
            plot_bars(
                args.plot,
                [str(r["range"]) for r in rows[:2]],
                [float(r["recurrent"]) for r in rows[:2]],
                "Recurrent cases",
                "cases",
            )
        return rows, f"Recurrence within {args.within_days} days: change between two ranges"
    got = recurrence(db, f, args.within_days, args.period, args.by)
    rows = [
        {"period": r.period, args.by: r.key, "cases": r.cases, "recurrent": r.recurrent, "rate": r.rate}
        for r in got
    ]
    trend_rows(rows, args, f"Recurrence rate (within {args.within_days} days)")
    return rows, f"Recurrence within {args.within_days} days, by {args.period}"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", choices=tuple(PERIODS), default="month")
    p.add_argument("--by", choices=tuple(DIMENSIONS), default="none", help="group by this as well")
    p.add_argument("--compare", nargs=2, type=parse_range, metavar=("BEFORE", "AFTER"),
                   help="compare two ranges SINCE..UNTIL, e.g. 2024-01-01..2024-04-01 2024-04-01..2024-07-01")
    p.add_argument("--within-days", type=int, default=30,
                   help="a case recurs if created at most this many days after an earlier one closed")
    p.add_argument("--hot-spots", action="store_true", help="rank cell x category hot spots instead")
    p.add_argument("--min-cases", type=int, default=3, help="hot spot: at least this many cases")
    p.add_argument("--limit", type=int, default=20, help="rows to rank (hot spots, chart of grids)")


COMMAND = Command("recurrence", "returns of problems (same category and cell) by period; --hot-spots",
                  DESCRIPTION, run_recurrence, arguments)
