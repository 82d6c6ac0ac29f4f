"""`cityops report discovery`: discovery rate on the command line."""

from __future__ import annotations

import argparse

from pipeline.reports import (
    ReportError,
    discovery,
    discovery_change,
)
from pipeline.reports.command import Command, compare_rows, filters_of, parse_range, trend_rows
from pipeline.reports.query import DIMENSIONS, PERIODS, Queryable
from pipeline.reports.render import Table, plot_bars

DESCRIPTION = """\
Problem cases (device faults are not problems) created in the range, by the day, place and first source of
their latest state (the view v_discovery_daily, which the dashboard reads too).
  rate = (patrol + sensor) / cases"""


def run_discovery(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    if args.team:
        raise ReportError("discovery has no --team: it counts cases by how they were found, before any team")
    f = filters_of(args)
    if args.compare:
        ch = discovery_change(db, args.compare[0], args.compare[1], f)
        rows = compare_rows(
            [{"range": r.key, "cases": r.total, "citizen": r.citizen, "patrol": r.patrol, "sensor": r.sensor,
              "rate": r.rate} for r in (ch.before, ch.after)],
            {"relative_change": ch.change, "points": ch.points},
        )
        if args.plot:
            plot_bars(
                args.plot,
                [str(r["range"]) for r in rows[:2]],
                [100 * float(r["rate"] or 0) for r in rows[:2]],
                "Discovery rate",
                "% proactive",
            )
        return rows, "Discovery rate: change between two ranges"
    got = discovery(db, f, args.period, args.by)
    rows = [
        {
            "period": r.period,
            args.by: r.key,
            "cases": r.total,
            "citizen": r.citizen,
            "patrol": r.patrol,
            "sensor": r.sensor,
            "rate": r.rate,
            "patrol_share": r.patrol_share,
            "sensor_share": r.sensor_share,
        }
        for r in got
    ]
    trend_rows(rows, args, "Discovery rate (patrol + sensor share of cases)")
    return rows, f"Discovery rate by {args.period}" + ("" if args.by == "none" else f" and {args.by}")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", choices=tuple(PERIODS), default="month")
    p.add_argument("--by", choices=tuple(d for d in DIMENSIONS if d != "team"), default="none",
                   help="group by this as well")
    p.add_argument("--compare", nargs=2, type=parse_range, metavar=("BEFORE", "AFTER"),
                   help="compare two ranges SINCE..UNTIL, e.g. 2024-01-01..2024-04-01 2024-04-01..2024-07-01")


COMMAND = Command("discovery", "discovery rate (patrol + sensor share of problem cases) by period and place",
                  DESCRIPTION, run_discovery, arguments)
