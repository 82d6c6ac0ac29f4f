"""Recurrence (城市管理顽疾, docs/cases.md §5): the same kind of problem coming back in the same place.

Counted over **problem cases** (device faults are not problems, §1) from their latest state (`v_cases`), per
return, whatever the linkage: a problem case is **recurrent** when an earlier problem case of the same
category in the same cell had been closed before it was created, at most `within_days` days before
(closed_at < created_at <= closed_at + N days). The `recurrence_of` link the worker records is not consulted:
a vendor back every day for 30 days, each day's case closed before the next report, is 30 cases and 29
returns. Rework is not a return (it is the same case), nor is a problem never fixed (one open case).

    rate = recurrent / cases              over the located problem cases created in the period (and group)

Cases without a cell are left out: they have no place to recur in. The earlier case may lie before the
report's date range (only the recurrent case has to be in it) but must match the place and category filters.

**Hot spots** (for a 削峰 "peak-shaving" campaign) are cell × category pairs with at least `min_cases` problem
cases in the date range (returns included), ranked by cases, then recurrent cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pipeline.reports.query import (
    NO_FILTERS,
    Filters,
    Queryable,
    ReportError,
    as_date,
    cases_latest,
    dimension_expr,
    period_expr,
    problems,
    relative_change,
    share,
)

_DIMENSIONS = ("none", "subdistrict", "grid", "cell", "category", "team")


def recurrent_cases_sql(filters: Filters, within_days: int, by: str = "none") -> tuple[str, dict[str, Any]]:
    """One row per located problem case in the filter: case_id, r_day, r_key, r_cell, r_category,
    r_subdistrict, r_created (epoch s) and `recurrent` (0/1). Shared with the health portrait. (Output names
    differ from the input columns: current ClickHouse resolves an alias named like a column inside
    aggregates.)"""
    if within_days < 1:
        raise ReportError(f"within_days must be at least 1, got {within_days}")
    key = dimension_expr(by, _DIMENSIONS)
    current, params = cases_latest(
        problems(filters),
        f"case_id, cell, category, subdistrict, team, toUInt32(created_at) AS created, day, {key} AS key",
        prefix="c_",
    )
    place = Filters(
        subdistrict=filters.subdistrict, grid=filters.grid, cell=filters.cell, category=filters.category,
        kind="problem",
    )
    earlier, p_params = cases_latest(
        place, "cell, category, case_id AS p_case, closed_at", dated=False, prefix="p_"
    )
    params.update(p_params)
    params["within_s"] = within_days * 86400
    sql = f"""
        SELECT case_id, any(day) AS r_day, any(key) AS r_key, any(cell) AS r_cell,
               any(category) AS r_category, any(subdistrict) AS r_subdistrict, any(created) AS r_created,
               max(p_closed > 0 AND p_case != case_id AND p_closed < created
                   AND created <= p_closed + %(within_s)s) AS recurrent
        FROM (SELECT * FROM ({current}) WHERE cell != '') AS cur
        ALL LEFT JOIN
             (SELECT cell, category, p_case, toUInt32(assumeNotNull(closed_at)) AS p_closed
              FROM ({earlier}) WHERE closed_at IS NOT NULL AND cell != '') AS earlier
        USING (cell, category)
        GROUP BY case_id"""
    return sql, params


@dataclass(frozen=True)
class RecurrenceRow:
    """Located problem cases of one period (and group), and how many of them were returns (`rate` =
    recurrent / cases)."""

    period: str
    key: str
    cases: int
    recurrent: int

    @property
    def rate(self) -> float | None:
        return share(self.recurrent, self.cases)


def recurrence(
    db: Queryable,
    filters: Filters = NO_FILTERS,
    within_days: int = 30,
    period: str = "month",
    by: str = "none",
) -> list[RecurrenceRow]:
    """Recurrent problem cases per period (day | week | month | all) and group."""
    per = period_expr(period, "r_day")
    inner, params = recurrent_cases_sql(filters, within_days, by)
    sql = f"""
        SELECT toString({per}) AS period, r_key AS key, count() AS cases, sum(recurrent) AS n_recurrent
        FROM ({inner})
        GROUP BY period, key
        ORDER BY period, key"""
    return [
        RecurrenceRow(as_date(r["period"]), str(r["key"]), int(r["cases"]), int(r["n_recurrent"]))
        for r in db.query_dicts(sql, params)
    ]


@dataclass(frozen=True)
class HotSpot:
    """A cell × category with its case count in the range; ranked for a peak-shaving campaign."""

    rank: int
    cell: str
    category: str
    subdistrict: str
    cases: int
    recurrent: int
    first_day: str
    last_day: str


def hot_spots(
    db: Queryable, filters: Filters = NO_FILTERS, min_cases: int = 3, within_days: int = 30, limit: int = 50
) -> list[HotSpot]:
    """Cell × category pairs with at least `min_cases` problem cases in the range (returns included), most
    cases first, then most recurrent cases."""
    if min_cases < 1 or limit < 1:
        raise ReportError("min_cases and limit must be at least 1")
    inner, params = recurrent_cases_sql(filters, within_days)
    params.update(min_cases=min_cases, limit=limit)
    sql = f"""
        SELECT r_cell AS cell, r_category AS category, any(r_subdistrict) AS subdistrict,
               count() AS cases, sum(recurrent) AS n_recurrent,
               toString(min(r_day)) AS first_day, toString(max(r_day)) AS last_day
        FROM ({inner})
        GROUP BY cell, category
        HAVING cases >= %(min_cases)s
        ORDER BY cases DESC, n_recurrent DESC, cell, category
        LIMIT %(limit)s"""
    return [
        HotSpot(
            i,
            str(r["cell"]),
            str(r["category"]),
            str(r["subdistrict"]),
            int(r["cases"]),
            int(r["n_recurrent"]),
            as_date(r["first_day"]),
            as_date(r["last_day"]),
        )
        for i, r in enumerate(db.query_dicts(sql, params), 1)
    ]


@dataclass(frozen=True)
class RecurrenceChange:
    """Recurrent cases in two ranges; `change` is the relative change of their number (−0.23 = "−23%")."""

    before: RecurrenceRow
    after: RecurrenceRow

    @property
    def change(self) -> float | None:
        return relative_change(float(self.before.recurrent), float(self.after.recurrent))

    @property
    def rate_change(self) -> float | None:
        return relative_change(self.before.rate, self.after.rate)


def recurrence_change(
    db: Queryable,
    before: tuple[date, date],
    after: tuple[date, date],
    filters: Filters = NO_FILTERS,
    within_days: int = 30,
) -> RecurrenceChange:
    """Compare two date ranges ([since, until) each) under the same place and category filters."""
    rows = []
    for since, until in (before, after):
        f = Filters(
            since, until, filters.subdistrict, filters.grid, filters.cell, filters.category, filters.team
        )
        got = recurrence(db, f, within_days, period="all")
        cases, recurrent = (got[0].cases, got[0].recurrent) if got else (0, 0)
        rows.append(
            RecurrenceRow(since.isoformat(), f"{since.isoformat()}..{until.isoformat()}", cases, recurrent)
        )
    return RecurrenceChange(rows[0], rows[1])
