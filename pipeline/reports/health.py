"""Team workload and the grid "health portrait" (网格健康画像), by the definitions of docs/cases.md §3 and §8.

**Workload** per team (the case's current team: the team of its open, or resolved, round), judged at `as_of`:

- `open`: cases dispatched or accepted (a resolved case is not open: it awaits verification);
- `overdue`: open cases whose current round's `due_at` is before as-of;
- `awaiting_verification`: cases the team resolved, not verified yet;
- `verification_overdue`: of those, `verify_due_at` before as-of (the verifier is late, not the team);
- `created` / `closed`: cases created / closed in the date range (Asia/Shanghai days).

Open, overdue and awaiting cover every case matching the place, category, kind and team filters, whatever its
date. Device faults count (they are the handling team's work too); `--kind problem` leaves them out.

**Health** per management grid (first 12 digits of the cell code), over the **problem cases** created in the
range (device faults are the maintainers' work, not the grid's problems, §1): `cases`; `open` and `overdue`
by the workload definitions; `recurrent` (returns, see pipeline.reports.recurrence) and `proactive` (first
found by a patrol or a sensor), with

    recurrence_rate = recurrent / cases      discovery_rate = proactive / cases

and one score from 0 (worst) to 100:

    score = 100 × (0.4 × (1 − overdue/open) + 0.3 × (1 − recurrence rate) + 0.3 × discovery rate)

A grid with no open case counts as fully on time; an unknown rate (no cases) counts as the neutral 0.5.
The weights say what supervision cares about most: promises kept, then problems that stay fixed, then
problems found before citizens call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.reports.query import NO_FILTERS, Filters, Queryable, cases_latest, epoch, problems, share
from pipeline.reports.recurrence import recurrent_cases_sql

WEIGHTS = {"on_time": 0.4, "recurrence": 0.3, "discovery": 0.3}


@dataclass(frozen=True)
class WorkloadRow:
    """One team's load (see the module docstring)."""

    team: str
    open: int
    overdue: int
    awaiting_verification: int
    verification_overdue: int
    created: int
    closed: int


def workload(
    db: Queryable, filters: Filters = NO_FILTERS, as_of: datetime | None = None
) -> list[WorkloadRow]:
    """One row per team, ordered by team. `open`, `overdue` and the verification counts cover all cases
    matching the place, category, kind and team filters, whatever their date; `created`/`closed` count those
    created / closed in the date range."""
    undated = Filters(
        subdistrict=filters.subdistrict, grid=filters.grid, cell=filters.cell, category=filters.category,
        team=filters.team, kind=filters.kind,
    )
    cases, params = cases_latest(
        undated,
        "team, status, day, closed_at, due_at, verify_due_at, is_open, is_closed, awaiting_verification",
        dated=False,
    )
    dates = Filters(since=filters.since, until=filters.until)
    created_cond, p1 = dates.where("day", prefix="w_")
    closed_cond, p2 = dates.where("toDate(assumeNotNull(closed_at), 'Asia/Shanghai')", prefix="x_")
    params.update(p1)
    params.update(p2)
    params["as_of"] = epoch(as_of or datetime.now(UTC))
    sql = f"""
        SELECT team AS team_name,
               countIf(is_open) AS n_open,
               countIf(is_open AND ifNull(toUInt32(due_at) < %(as_of)s, 0)) AS n_overdue,
               countIf(awaiting_verification) AS n_awaiting,
               countIf(awaiting_verification AND ifNull(toUInt32(verify_due_at) < %(as_of)s, 0)) AS n_verify_late,
               countIf({created_cond}) AS n_created,
               countIf(is_closed AND closed_at IS NOT NULL AND {closed_cond}) AS n_closed
        FROM ({cases})
        WHERE status != 'new'
        GROUP BY team_name
        ORDER BY team_name"""
    return [
        WorkloadRow(str(r["team_name"]), int(r["n_open"]), int(r["n_overdue"]), int(r["n_awaiting"]),
                    int(r["n_verify_late"]), int(r["n_created"]), int(r["n_closed"]))
        for r in db.query_dicts(sql, params)
    ]


@dataclass(frozen=True)
class GridHealth:
    """A management grid's portrait over the problem cases created in the range."""

    grid: str
    subdistrict: str
    cases: int
    open: int
    overdue: int
    recurrent: int
    proactive: int  # first found by a patrol or a sensor

    @property
    def recurrence_rate(self) -> float | None:
        return share(self.recurrent, self.cases)

    @property
    def discovery_rate(self) -> float | None:
        return share(self.proactive, self.cases)

    @property
    def score(self) -> float:
        on_time = 1.0 - (self.overdue / self.open if self.open else 0.0)
        rec = self.recurrence_rate
        disc = self.discovery_rate
        value = (
            WEIGHTS["on_time"] * on_time
            + WEIGHTS["recurrence"] * (1.0 - (0.5 if rec is None else rec))
            + WEIGHTS["discovery"] * (0.5 if disc is None else disc)
        )
        return round(100.0 * value, 1)


def health(
    db: Queryable, filters: Filters = NO_FILTERS, within_days: int = 30, as_of: datetime | None = None
) -> list[GridHealth]:
    """One row per management grid with located problem cases in the range, worst score first."""
    rec_sql, params = recurrent_cases_sql(filters, within_days, by="grid")
    cases, p2 = cases_latest(problems(filters), "case_id, discovered_by, due_at, is_open", prefix="h_")
    params.update(p2)
    params["as_of"] = epoch(as_of or datetime.now(UTC))
    sql = f"""
        SELECT r_key AS grid, any(r_subdistrict) AS subdistrict, count() AS cases,
               countIf(is_open) AS open,
               countIf(is_open AND ifNull(toUInt32(due_at) < %(as_of)s, 0)) AS overdue,
               sum(recurrent) AS n_recurrent,
               countIf(discovered_by IN ('patrol', 'sensor')) AS proactive
        FROM ({rec_sql}) AS rec
        ANY LEFT JOIN ({cases}) AS latest USING case_id
        GROUP BY grid"""
    rows = [
        GridHealth(
            str(r["grid"]),
            str(r["subdistrict"]),
            int(r["cases"]),
            int(r["open"]),
            int(r["overdue"]),
            int(r["n_recurrent"]),
            int(r["proactive"]),
        )
        for r in db.query_dicts(sql, params)
    ]
    return sorted(rows, key=lambda g: (g.score, g.grid))
