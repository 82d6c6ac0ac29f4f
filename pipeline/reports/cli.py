"""`cityops report discovery | recurrence | sla | workload | health | evaluation | bulletin`: the reports on the
command line (evaluation and bulletin: pipeline.reports.evaluation_cli).

Common options: the filters (`--since`, `--until`: a date `2024-04-01` or a span back from today `30d`;
`--subdistrict`, `--grid`, `--cell`, `--category` code or prefix, `--team`), `--format table|csv|json` and
`--plot FILE.png`. Every value goes to the database as a bound parameter.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.reports import (
    Filters,
    ReportError,
    discovery,
    discovery_change,
    health,
    hot_spots,
    recurrence,
    recurrence_change,
    sla,
    workload,
)
from pipeline.reports.evaluation_cli import (
    BULLETIN_DESCRIPTION,
    DESCRIPTION,
    add_evaluation_args,
    as_table,
    run_bulletin,
    run_evaluation,
)
from pipeline.reports.query import DIMENSIONS, KINDS, PERIODS, Queryable, parse_instant
from pipeline.reports.render import Table, category_label, place_label, plot_bars, plot_trend, render
from pipeline.reports.sla import Durations, SlaReport

SHANGHAI = timedelta(hours=8)


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


def _connect() -> Queryable:
    from pipeline.sink.transport import ClickHouse

    return ClickHouse(Settings.from_env())


# ---- each report: run it, turn it into rows, optionally plot -------------------------------------


def run_discovery(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    if args.team:
        raise ReportError("discovery has no --team: it counts cases by how they were found, before any team")
    f = filters_of(args)
    if args.compare:
        ch = discovery_change(db, args.compare[0], args.compare[1], f)
        rows = [
            {
                "range": r.key,
                "cases": r.total,
                "citizen": r.citizen,
                "patrol": r.patrol,
                "sensor": r.sensor,
                "rate": r.rate,
            }
            for r in (ch.before, ch.after)
        ]
        rows.append(
            {
                "range": "change",
                "cases": None,
                "citizen": None,
                "patrol": None,
                "sensor": None,
                "rate": None,
                "relative_change": ch.change,
                "points": ch.points,
            }
        )
        for r in rows[:2]:
            r.update(relative_change=None, points=None)
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
    if args.by == "none":
        for r in rows:
            del r["none"]
    if args.plot:
        plot_trend(
            args.plot,
            rows,
            "period",
            "rate",
            None if args.by == "none" else args.by,
            "Discovery rate (patrol + sensor share of cases)",
            "share of cases",
        )
    return rows, f"Discovery rate by {args.period}" + ("" if args.by == "none" else f" and {args.by}")


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
        rows = [
            {
                "range": r.key,
                "cases": r.cases,
                "recurrent": r.recurrent,
                "rate": r.rate,
                "relative_change": None,
            }
            for r in (ch.before, ch.after)
        ]
        rows.append(
            {"range": "change", "cases": None, "recurrent": None, "rate": None, "relative_change": ch.change}
        )
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
    if args.by == "none":
        for r in rows:
            del r["none"]
    if args.plot:
        plot_trend(
            args.plot,
            rows,
            "period",
            "rate",
            None if args.by == "none" else args.by,
            f"Recurrence rate (within {args.within_days} days)",
            "share of cases",
        )
    return rows, f"Recurrence within {args.within_days} days, by {args.period}"


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


REPORTS: dict[str, tuple[Callable[[Queryable, argparse.Namespace], tuple[Table, str]], str]] = {
    "discovery": (run_discovery, "discovery rate (patrol + sensor share of problem cases) by period and place"),
    "recurrence": (run_recurrence, "returns of problems (same category and cell) by period; --hot-spots"),
    "sla": (run_sla, "on time and who is credited: rounds per team, dispatch, verification, closing"),
    "workload": (run_workload, "open, overdue, awaiting verification, created and closed cases per team"),
    "health": (run_health, "per management grid: open, overdue, recurrence, discovery, one score"),
    "evaluation": (run_evaluation, "综合评价: regions, departments, positions; indicators, scores, A-E grades"),
}

# What `--help` says each report counts, with the denominator of every rate (docs/cases.md §5, §8).
DESCRIPTIONS: dict[str, str] = {
    "discovery": """\
Problem cases (device faults are not problems) created in the range, by the day, place and first source of
their latest state (the view v_discovery_daily, which the dashboard reads too).
  rate = (patrol + sensor) / cases""",
    "recurrence": """\
A problem case is recurrent when an earlier problem case of the same category in the same cell was closed
before it was created and at most --within-days days before; counted per return, whatever the linkage.
  rate = recurrent / located problem cases created in the range
--hot-spots ranks cell x category by problem cases in the range (returns included), then recurrent cases.""",
    "sla": """\
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
--team keeps that team's lines (team, verification); dispatch and closing are nobody's team.""",
    "workload": """\
Per team (the case's current team), at --as-of (default now): open (dispatched or accepted; a resolved
case is not open), overdue (open, the round's due_at passed), awaiting_verification (resolved),
verification_overdue (resolved, verify_due_at passed); created and closed: cases created / closed in the
range. Device faults count unless --kind problem.""",
    "health": """\
Per management grid, over the problem cases created in the range: open and overdue as in workload,
recurrence_rate = recurrent / cases, discovery_rate = (patrol + sensor) / cases, and
score = 100 x (0.4 x (1 - overdue/open) + 0.3 x (1 - recurrence_rate) + 0.3 x discovery_rate).""",
    "evaluation": DESCRIPTION,
}


def _run(args: argparse.Namespace) -> int:
    from pipeline.sink.transport import QueryError, quiet_driver_logs

    quiet_driver_logs()
    func, _ = REPORTS[args.report]
    db = args.connect()
    try:
        rows, title = func(db, args)
    except ReportError as err:
        print(f"report {args.report}: {err}", file=sys.stderr)
        return 2
    except QueryError as err:
        print(f"report {args.report}: {err}", file=sys.stderr)
        return 1
    finally:
        close = getattr(db, "close", None)
        if close is not None:
            close()
    if args.report == "evaluation" and args.format == "table":
        sys.stdout.write(as_table(rows, args.of, title))
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
    for name, (_, text) in REPORTS.items():
        p = rsub.add_parser(name, help=text, description=f"{text}.\n\n{DESCRIPTIONS[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p)
        if name in ("sla", "workload"):
            p.add_argument("--kind", choices=KINDS, default=None,
                           help="problem cases or device faults only (default: both)")
        if name == "evaluation":
            add_evaluation_args(p)
        if name in ("discovery", "recurrence"):
            p.add_argument("--period", choices=tuple(PERIODS), default="month")
            p.add_argument(
                "--by",
                choices=tuple(d for d in DIMENSIONS if d != "team" or name == "recurrence"),
                default="none",
                help="group by this as well",
            )
            p.add_argument(
                "--compare",
                nargs=2,
                type=parse_range,
                metavar=("BEFORE", "AFTER"),
                help="compare two ranges SINCE..UNTIL, e.g. 2024-01-01..2024-04-01 2024-04-01..2024-07-01",
            )
        if name == "evaluation":
            p.add_argument("--compare", nargs=2, type=parse_range, metavar=("BEFORE", "AFTER"),
                           help="evaluate two ranges SINCE..UNTIL and the change per unit")
        if name in ("recurrence", "health"):
            p.add_argument(
                "--within-days",
                type=int,
                default=30,
                help="a case recurs if created at most this many days after an earlier one closed",
            )
        if name == "recurrence":
            p.add_argument("--hot-spots", action="store_true", help="rank cell x category hot spots instead")
            p.add_argument("--min-cases", type=int, default=3, help="hot spot: at least this many cases")
        if name in ("recurrence", "health"):
            p.add_argument("--limit", type=int, default=20, help="rows to rank (hot spots, chart of grids)")
        if name == "sla":
            p.add_argument(
                "--dispatch-within",
                type=int,
                default=30,
                metavar="MIN",
                help="the centre's dispatch limit: a first dispatch within this many minutes of the first "
                "report is on time (default 30, the shipped time_limits.dispatch)",
            )
        if name in ("sla", "workload", "health"):
            p.add_argument(
                "--as-of",
                type=parse_instant,
                default=None,
                metavar="TIME",
                help="judge due and overdue at this time (ISO 8601, UTC unless it has an offset; default now)",
            )
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
