"""`cityops report evaluation` and `cityops report bulletin` (registered by pipeline.reports.cli).

    cityops report evaluation --of region|department|position [--level district|subdistrict|grid]
        [--month YYYY-MM | --since D --until D] [--period day|week|month|all] [--compare A..B C..D]
        [filters] [--weights FILE] [--as-of TIME] [--format table|csv|json]
    cityops report bulletin --month YYYY-MM [--out DIR] [--no-pdf] [filters] [--weights FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pipeline.reports.command import Command, on_database, parse_range
from pipeline.reports.evaluation import LEVELS, Unit, evaluate, month_range, periods
from pipeline.reports.indicators import INDICATORS, Indicator, help_text
from pipeline.reports.patrols import PATROLS_FILE, PatrolsError, load_patrols
from pipeline.reports.query import Filters, Queryable, ReportError, parse_instant
from pipeline.reports.render import Table
from pipeline.reports.weights import WEIGHTS_FILE, WeightsError, load_weights

DESCRIPTION = f"""\
The standard evaluation (综合评价) of problem cases (device faults are never counted), per period, with
due-based denominators: a case or round counts where its deadline falls, closed or not.
{help_text()}
score: weighted indicator scores (a rate: 100 x rate, or 100 x (1 - rate) where less is better; a count:
100 x count / the largest among the units evaluated together); grade A-E by the bands of --weights
(default {WEIGHTS_FILE.name}: a local choice in the shape of GB/T 30428.4).
--compare BEFORE AFTER evaluates two ranges and adds a change line per unit (rates in points)."""

BULLETIN_DESCRIPTION = """\
The monthly bulletin (绩效通报): totals and rates with the change against the previous month, the sub-district,
department and verifier evaluations with grades, the top categories of events and parts, two charts, the
definitions and weights. Written as HTML and PDF (printed by headless Chromium) into --out."""

def defs_of(of: str) -> dict[str, Indicator]:
    """The indicators of `--of`: a position row carries the verifiers', patrols' and inspectors' columns (None
    where they do not apply), so CSV and JSON have one header."""
    if of == "position":
        return {**INDICATORS["position.verifier"], **INDICATORS["position.patrol"],
                **INDICATORS["position.inspector"], **INDICATORS["position.checker"]}
    return INDICATORS[of]


def _unit_row(u: Unit, of: str, label: str) -> dict[str, Any]:
    row: dict[str, Any] = {"period": f"{u.since.isoformat()}..{u.until.isoformat()}", label: u.unit}
    if of == "position":
        row["role"] = u.of.split(".")[1]
    row.update({k: u.values.get(k) for k in defs_of(of)})
    row.update(score=u.score, grade=u.grade)
    return row


def _label(args: argparse.Namespace) -> str:
    return args.level if args.of == "region" else "team" if args.of == "department" else "position"


def _patrols(args: argparse.Namespace) -> Any:
    if args.of != "position":
        return None
    try:
        return load_patrols(args.patrols) if args.patrols else load_patrols()
    except PatrolsError as err:
        raise ReportError("bad patrols file:\n" + str(err)) from err


def _weights(args: argparse.Namespace) -> Any:
    try:
        return load_weights(args.weights) if args.weights else load_weights()
    except WeightsError as err:
        raise ReportError("bad weights file:\n" + str(err)) from err


def _range(args: argparse.Namespace) -> tuple[date, date]:
    if args.month:
        if args.since or args.until:
            raise ReportError("give either --month or --since/--until, not both")
        return month_range(args.month)
    if not args.since or not args.until:
        raise ReportError("the evaluation needs a period: --month YYYY-MM, or --since and --until")
    return args.since, args.until


def run_evaluation(db: Queryable, args: argparse.Namespace) -> tuple[Table, str]:
    weights = _weights(args)
    patrols = _patrols(args)
    base = Filters(None, None, args.subdistrict, args.grid, args.cell, args.category, args.team)
    label = _label(args)
    of = args.of
    if args.compare:
        (a0, a1), (b0, b1) = args.compare
        before = {u.unit: u for u in evaluate(db, of, base, a0, a1, level=args.level, as_of=args.as_of,
                                              weights=weights, patrols=patrols)}
        after = {u.unit: u for u in evaluate(db, of, base, b0, b1, level=args.level, as_of=args.as_of,
                                             weights=weights, patrols=patrols)}
        rows: Table = []
        for unit in sorted(set(before) | set(after)):
            pair = [before.get(unit), after.get(unit)]
            for u in pair:
                if u is not None:
                    rows.append(_unit_row(u, of, label))
            change: dict[str, Any] = {"period": "change", label: unit}
            for k, ind in defs_of(of).items():
                x, y = (p.values.get(k) if p else None for p in pair)
                if x is None or y is None:
                    change[k] = None
                elif "/" in ind.formula:          # a rate: the change in points, as a fraction
                    change[k] = float(y) - float(x)
                else:
                    change[k] = int(y) - int(x)
            sx, sy = (p.score if p else None for p in pair)
            change.update(score=None if sx is None or sy is None else round(sy - sx, 2), grade=None)
            rows.append(change)
        return rows, f"Evaluation of {label}: {a0}..{a1} against {b0}..{b1} (change: after - before)"
    since, until = _range(args)
    rows = []
    for a, b in periods(since, until, args.period):
        rows += [_unit_row(u, of, label) for u in evaluate(db, of, base, a, b, level=args.level,
                                                           as_of=args.as_of, weights=weights,
                                                           patrols=patrols)]
    if args.plot:
        from pipeline.reports.render import plot_bars

        scored = [r for r in rows if r["score"] is not None]
        plot_bars(args.plot, [f"{r[label]} {r['period']}" for r in scored], [float(r["score"]) for r in scored],
                  f"Evaluation score of {label}", "score (0-100)")
    return rows, f"Evaluation (综合评价) of {label}, {since}..{until} by {args.period}"


# ---- the table with Chinese headers, padded by display width ----------------------------------------------------

def width(text: str) -> int:
    """Display width: East Asian wide and full-width characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def pad(text: str, n: int, right: bool) -> str:
    fill = " " * max(0, n - width(text))
    return fill + text if right else text + fill


def as_table(rows: Table, of: str, title: str) -> str:
    """The evaluation as an aligned table with the indicators' Chinese names as headers."""
    if not rows:
        return f"{title}\n(no cases match)\n"
    defs = defs_of(of)
    columns = list(rows[0])
    heads = [defs[c].zh if c in defs else {"score": "得分", "grade": "等级", "role": "岗位"}.get(c, c)
             for c in columns]

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c)
        if v is None:
            return "-"
        if c in defs and "/" in defs[c].formula:
            return f"{float(v) * 100:+.1f}" if r.get("period") == "change" else f"{float(v) * 100:.1f}%"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max(width(h), *(width(row[i]) for row in cells)) for i, h in enumerate(heads)]
    right = [i > 1 for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(pad(v, w, r) for v, w, r in zip(values, widths, right, strict=True)).rstrip()

    out = [title, line(heads), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(out) + "\n"


def add_evaluation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--of", choices=("region", "department", "position"), default="region",
                   help="what is evaluated: regions, departments (teams) or positions (verifiers, patrol "
                   "teams, inspectors)")
    p.add_argument("--level", choices=tuple(LEVELS), default="subdistrict", help="region level (with --of region)")
    p.add_argument("--month", help="the period: a month YYYY-MM (or --since and --until)")
    p.add_argument("--period", choices=("day", "week", "month", "all"), default="all",
                   help="split the range into days, weeks or months (default: one period)")
    p.add_argument("--weights", type=Path, help=f"weights and grade bands (default {WEIGHTS_FILE})")
    p.add_argument("--patrols", type=Path,
                   help=f"patrol teams' grids and categories, for --of position (default {PATROLS_FILE})")
    p.add_argument("--as-of", type=_instant, default=None, metavar="TIME",
                   help="judge closed / resolved / verified at this time (default: the period's end, or now)")


def _instant(text: str) -> datetime:
    return parse_instant(text)


def _arguments(p: argparse.ArgumentParser) -> None:
    add_evaluation_args(p)
    p.add_argument("--compare", nargs=2, type=parse_range, metavar=("BEFORE", "AFTER"),
                   help="evaluate two ranges SINCE..UNTIL and the change per unit")


COMMAND = Command("evaluation", "综合评价: regions, departments, positions; indicators, scores, A-E grades",
                  DESCRIPTION, run_evaluation, _arguments,
                  as_table=lambda rows, args, title: as_table(rows, args.of, title))


def run_bulletin(args: argparse.Namespace) -> int:
    """Write the month's bulletin as HTML (and PDF unless --no-pdf); print the paths, pages and time taken."""
    from pipeline.reports import bulletin as bl
    from pipeline.reports import pdf

    started = time.perf_counter()
    try:
        since, until = month_range(args.month)
        weights = _weights(args)
    except ReportError as err:
        print(f"report bulletin: {err}", file=sys.stderr)
        return 2
    f = Filters(None, None, args.subdistrict, args.grid, args.cell, args.category, None)
    doc, code = on_database(args, "bulletin", lambda db: bl.build(db, since, until, f, weights, args.as_of))
    if doc is None:
        return code
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bulletin-{args.month}"
    html_path = out / f"{stem}.html"
    html_path.write_text(bl.to_html(doc), encoding="utf-8")
    print(f"HTML: {html_path}")
    if not args.no_pdf:
        pdf_path = out / f"{stem}.pdf"
        try:
            pdf.write_pdf(html_path, pdf_path)
        except bl.BulletinError as err:
            print(f"report bulletin: {err}", file=sys.stderr)
            return 1
        print(f"PDF: {pdf_path} ({pdf.pdf_pages(pdf_path)} pages)")
    print(f"{time.perf_counter() - started:.1f} s, {doc.totals['filed']} cases filed in {args.month}")
    return 0
