"""`cityops report health`: grid health on the command line."""

from __future__ import annotations

import argparse

from pipeline.reports import (
    health,
)
from pipeline.reports.command import Command, add_as_of, filters_of
from pipeline.reports.query import Queryable
from pipeline.reports.render import Table, place_label, plot_bars

DESCRIPTION = """\
Per management grid, over the problem cases created in the range: open and overdue as in workload,
recurrence_rate = recurrent / cases, discovery_rate = (patrol + sensor) / cases, and
score = 100 x (0.4 x (1 - overdue/open) + 0.3 x (1 - recurrence_rate) + 0.3 x discovery_rate)."""


def run_health(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    got = health(db, filters_of(args), args.within_days, args.as_of)
    rows: Table = [
        {
            "grid": g.grid,
            "subdistrict": g.subdistrict,
            "score": g.score,
            "cases": g.cases,
            "open": g.open,
            "overdue": g.overdue,
            "recurrence_rate": g.recurrence_rate,
            "discovery_rate": g.discovery_rate,
        }
        for g in got
    ]
    if args.plot:
        worst = got[: args.limit]
        plot_bars(
            args.plot,
            [place_label(g.grid) for g in worst],
            [g.score for g in worst],
            "Grid health (lowest scores first)",
            "score (0-100)",
        )
    return rows, "Grid health portrait (lowest score first)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--within-days", type=int, default=30,
                   help="a case recurs if created at most this many days after an earlier one closed")
    p.add_argument("--limit", type=int, default=20, help="rows to rank (hot spots, chart of grids)")
    add_as_of(p)


COMMAND = Command("health", "per management grid: open, overdue, recurrence, discovery, one score",
                  DESCRIPTION, run_health, arguments)
