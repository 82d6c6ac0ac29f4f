"""Team workload and the grid "health portrait" (网格健康画像).

**Workload** per team: cases open now, of them overdue; cases created and closed in the range.

**Health** per management grid (first 12 digits of the cell code), over the cases created in the range:
open and overdue cases, the recurrence rate and the discovery rate, and one score from 0 (worst) to 100:

    score = 100 × (0.4 × (1 − overdue/open) + 0.3 × (1 − recurrence rate) + 0.3 × discovery rate)

A grid with no open case counts as fully on time; an unknown rate (no cases) counts as the neutral 0.5.
The weights say what supervision cares about most: promises kept, then problems that stay fixed, then
problems found before citizens call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.reports.query import NO_FILTERS, TZ, Filters, Queryable, cases_latest, epoch, share
from pipeline.reports.recurrence import recurrent_cases_sql

WEIGHTS = {"on_time": 0.4, "recurrence": 0.3, "discovery": 0.3}


@dataclass(frozen=True)
class WorkloadRow:
    """One team's load: open now (of the cases in the filter), overdue, created and closed in the range."""

    team: str
    open: int
    overdue: int
    created: int
    closed: int


def workload(
    db: Queryable, filters: Filters = NO_FILTERS, as_of: datetime | None = None
) -> list[WorkloadRow]:
    """One row per team. `open`/`overdue` cover all cases matching the place filters, whatever their date;
    `created`/`closed` count those created / closed in the date range."""
    place_cond_cases, params = cases_latest(
        Filters(
            subdistrict=filters.subdistrict,
            grid=filters.grid,
            cell=filters.cell,
            category=filters.category,
            team=filters.team,
        ),
        "case_id, team, status, created_at, due_at, closed_at",
        dated=False,
    )
    created_cond, p1 = filters.where(f"toDate(created_at, '{TZ}')", prefix="w_")
    closed_cond, p2 = filters.where(f"toDate(assumeNotNull(closed_at), '{TZ}')", prefix="x_")
    params.update(p1)
    params.update(p2)
    params["as_of"] = epoch(as_of or datetime.now(UTC))
    sql = f"""
        SELECT team,
               countIf(status != 'closed') AS open,
               countIf(status != 'closed' AND ifNull(toUInt32(due_at) < %(as_of)s, 0)) AS overdue,
               countIf({created_cond}) AS created,
               countIf(status = 'closed' AND closed_at IS NOT NULL AND {closed_cond}) AS closed
        FROM ({place_cond_cases})
        GROUP BY team
        ORDER BY team"""
    return [
        WorkloadRow(str(r["team"]), int(r["open"]), int(r["overdue"]), int(r["created"]), int(r["closed"]))
        for r in db.query_dicts(sql, params)
    ]


@dataclass(frozen=True)
class GridHealth:
    """A management grid's portrait over the cases created in the range."""

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
    """One row per management grid with cases in the range, worst score first."""
    rec_sql, params = recurrent_cases_sql(filters, within_days, by="grid")
    cases, p2 = cases_latest(filters, "case_id, team, status, discovered_by, due_at", prefix="h_")
    params.update(p2)
    params["as_of"] = epoch(as_of or datetime.now(UTC))
    sql = f"""
        SELECT r_key AS grid, any(r_subdistrict) AS subdistrict, count() AS cases,
               countIf(status != 'closed') AS open,
               countIf(status != 'closed' AND ifNull(toUInt32(due_at) < %(as_of)s, 0)) AS overdue,
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
