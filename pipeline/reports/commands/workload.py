"""`cityops report workload`: team workload on the command line."""

from __future__ import annotations

import argparse

from pipeline.reports import (
    workload,
)
from pipeline.reports.command import Command, add_as_of, add_kind, filters_of
from pipeline.reports.query import Queryable
from pipeline.reports.render import Table, plot_bars

DESCRIPTION = """\
Per team (the case's current team), at --as-of (default now): open (dispatched or accepted; a resolved
case is not open), overdue (open, the round's due_at passed), awaiting_verification (resolved),
verification_overdue (resolved, verify_due_at passed); created and closed: cases created / closed in the
range. Device faults count unless --kind problem."""


def run_workload(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    got = workload(db, filters_of(args), args.as_of)
    rows: Table = [
        {"team": r.team, "open": r.open, "overdue": r.overdue, "awaiting_verification": r.awaiting_verification,
         "verification_overdue": r.verification_overdue, "created": r.created, "closed": r.closed}
        for r in got
    ]
    if args.plot:
        plot_bars(
            args.plot, [r.team for r in got], [float(r.open) for r in got], "Open cases per team", "cases"
        )
    return rows, ("Team workload (open = dispatched or accepted, overdue and awaiting verification now; "
                  "created and closed in the range)")


def arguments(p: argparse.ArgumentParser) -> None:
    add_kind(p)
    add_as_of(p)


COMMAND = Command("workload", "open, overdue, awaiting verification, created and closed cases per team",
                  DESCRIPTION, run_workload, arguments)
