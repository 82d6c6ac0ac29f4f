"""`cityops report sla`: service levels on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.reports import (
    sla,
)
from pipeline.reports.command import Command, add_as_of, add_kind, filters_of
from pipeline.reports.query import Queryable
from pipeline.reports.render import Table, plot_bars
from pipeline.reports.sla import Durations, SlaReport

DESCRIPTION = """\
Over the cases created in the range and their dispatch rounds, judged at --as-of (default now).
team lines, one per team, each round credited to its own team:
  rounds; rounds_due: due_at passed, not rejected or superseded; resolved (incl. reworked),
  resolved_on_time (<= due_at), resolved_on_time_of_due;
  resolved_on_time_rate = resolved_on_time_of_due / rounds_due;
  accepted, accepted_on_time (<= accept_due_at); accepted_on_time_rate = accepted_on_time / accepted;
  reworked, rejected, superseded; overdue_open: open rounds past due_at;
  hours from the round's dispatch to acceptance / resolution (median, p90)
dispatch line (command centre): dispatched, dispatched_on_time (first dispatch <= first report +
  --dispatch-within); dispatched_on_time_rate = dispatched_on_time / dispatched
verification lines, one per verifier (supervision; patrol for supervision's own fixes): verified,
  verified_on_time (<= verify_due_at); verified_on_time_rate = verified_on_time / verified;
  awaiting_verification; verification_overdue: resolved, not verified, verify_due_at passed
closing line (the cases): closed, closed_on_time (final resolution <= case_due_at and verified <=
  verify_due_at); closed_on_time_rate = closed_on_time / closed (denominator: cases CLOSED, so a team that
  leaves its overdue cases open looks better); due: case_due_at passed (应结案数);
  close_rate = closed_of_due / due (结案率); closed_on_time_of_due_rate = closed_on_time_of_due / due
  (按期结案率, the standard's denominator: cases DUE, closed or not; `report evaluation` counts by period)
--team keeps that team's lines (team, verification); dispatch and closing are nobody's team."""


def _hours(d: Durations, prefix: str) -> dict[str, float | None]:
    return {f"{prefix}_median_h": d.median_h, f"{prefix}_p90_h": d.p90_h}

# The columns of each line of `report sla`; every row carries all of them (None where they do not apply), so
# CSV and JSON have one header. The table format prints each line as its own section.
SLA_COLUMNS: dict[str, tuple[str, ...]] = {
    "team": ("rounds", "rounds_due", "resolved", "resolved_on_time", "resolved_on_time_of_due",
             "resolved_on_time_rate", "accepted", "accepted_on_time", "accepted_on_time_rate", "reworked",
             "rejected", "superseded", "overdue_open", "accept_median_h", "accept_p90_h", "resolve_median_h",
             "resolve_p90_h"),
    "dispatch": ("cases", "dispatched", "dispatched_on_time", "dispatched_on_time_rate"),
    "verification": ("verified", "verified_on_time", "verified_on_time_rate", "awaiting_verification",
                     "verification_overdue"),
    "closing": ("cases", "closed", "closed_on_time", "closed_on_time_rate", "due", "closed_of_due",
                "closed_on_time_of_due", "close_rate", "closed_on_time_of_due_rate", "close_median_h",
                "close_p90_h"),
}

def sla_rows(report: SlaReport) -> Table:
    """The report as rows: `line` (team | dispatch | verification | closing), `team` (the team, `command` for
    the centre's dispatch, the verifier, nothing for closing), then every figure (see SLA_COLUMNS)."""
    names = list(dict.fromkeys(c for cols in SLA_COLUMNS.values() for c in cols))
    lines: list[tuple[str, str | None, dict[str, Any]]] = []
    for t in report.teams:
        lines.append(("team", t.team, {
            "rounds": t.rounds, "rounds_due": t.rounds_due, "resolved": t.resolved,
            "resolved_on_time": t.resolved_on_time, "resolved_on_time_of_due": t.resolved_on_time_of_due,
            "resolved_on_time_rate": t.resolved_on_time_rate, "accepted": t.accepted,
            "accepted_on_time": t.accepted_on_time, "accepted_on_time_rate": t.accepted_on_time_rate,
            "reworked": t.reworked, "rejected": t.rejected, "superseded": t.superseded,
            "overdue_open": t.overdue_open, **_hours(t.to_accept, "accept"), **_hours(t.to_resolve, "resolve"),
        }))
    if report.dispatch is not None:
        d = report.dispatch
        lines.append(("dispatch", "command", {
            "cases": d.cases, "dispatched": d.dispatched, "dispatched_on_time": d.dispatched_on_time,
            "dispatched_on_time_rate": d.dispatched_on_time_rate,
        }))
    for v in report.verification:
        lines.append(("verification", v.verifier, {
            "verified": v.verified, "verified_on_time": v.verified_on_time,
            "verified_on_time_rate": v.verified_on_time_rate, "awaiting_verification": v.awaiting_verification,
            "verification_overdue": v.verification_overdue,
        }))
    if report.closing is not None:
        c = report.closing
        lines.append(("closing", None, {
            "cases": c.cases, "closed": c.closed, "closed_on_time": c.closed_on_time,
            "closed_on_time_rate": c.closed_on_time_rate, "due": c.due, "closed_of_due": c.closed_of_due,
            "closed_on_time_of_due": c.closed_on_time_of_due, "close_rate": c.close_rate,
            "closed_on_time_of_due_rate": c.closed_on_time_of_due_rate, **_hours(c.to_close, "close"),
        }))
    return [{"line": line, "team": team, **{n: values.get(n) for n in names}} for line, team, values in lines]

def run_sla(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    report = sla(db, filters_of(args), args.dispatch_within, args.as_of)
    if args.plot:
        plot_bars(
            args.plot,
            [t.team for t in report.teams],
            [100 * (t.resolved_on_time_rate or 0) for t in report.teams],
            "Rounds resolved on time",
            "% of rounds due (resolved by their due time)",
        )
    return sla_rows(report), (
        f"Service levels (dispatch on time = within {args.dispatch_within} min; "
        "rounds credited to their own team; closing: closed_on_time_rate over cases CLOSED, "
        "closed_on_time_of_due_rate (按期结案率) and close_rate (结案率) over cases DUE)"
    )


def arguments(p: argparse.ArgumentParser) -> None:
    add_kind(p)
    p.add_argument("--dispatch-within", type=int, default=30, metavar="MIN",
                   help="the centre's dispatch limit: a first dispatch within this many minutes of the first "
                   "report is on time (default 30, the shipped time_limits.dispatch)")
    add_as_of(p)


COMMAND = Command("sla", "on time and who is credited: rounds per team, dispatch, verification, closing",
                  DESCRIPTION, run_sla, arguments)
