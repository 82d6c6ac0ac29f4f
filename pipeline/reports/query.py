"""What every report shares: the query interface, the filters and the grouping vocabulary.

Reports never put user text into SQL. Filters become `%(name)s` parameters escaped by the driver; the only
variable SQL text comes from the fixed tables below (`PERIODS`, `DIMENSIONS`), chosen by key.

Reports read the views of migration 0004 (`v_cases`, `v_rounds`, `v_discovery_daily`), the ones the Grafana
dashboard reads: what "open", "overdue", "on time" and "discovered" mean is written once, in those views
(docs/cases.md §8: "reports and dashboards read the same definitions"). A view reads the latest state with
`FINAL` (argMax would skip a NULL `closed_at` on 18.16 and return a stale close); filters apply to that latest
state, since a case's day, place and first source change when an earlier report is processed late (§1).
Only "as of" comparisons are made here, with the view's columns and an `as_of` parameter, because the views'
own `is_overdue` & co. compare with `now()`.

Dialect: every query runs on ClickHouse 18.16 and on current releases (tests prove both). So: no window
functions, no CTEs over subqueries, explicit `ALL`/`ANY` join strictness with `USING`.
Days are Asia/Shanghai calendar days, the calendar the district reports in.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

TZ = "Asia/Shanghai"

Period = Literal["day", "week", "month", "all"]
KINDS = ("problem", "device_fault")
Dimension = Literal["none", "subdistrict", "grid", "cell", "category", "team"]

# A Date expression -> the period it belongs to (weeks start on Monday, as in China).
PERIODS: dict[str, str] = {
    "day": "{d}",
    "week": "toMonday({d})",
    "month": "toStartOfMonth({d})",
    "all": "'all'",  # one period covering the whole range
}

# Group keys over a table with `cell`, `subdistrict`, `category` (and `team` for cases). The management
# grid is the first 12 digits of the 15-digit cell code.
DIMENSIONS: dict[str, str] = {
    "none": "''",
    "subdistrict": "subdistrict",
    "grid": "substring(cell, 1, 12)",
    "cell": "cell",
    "category": "category",
    "team": "team",
}


class Queryable(Protocol):
    """Anything that runs a SELECT with `%(name)s` parameters and returns rows as dicts
    (pipeline.sink.transport.ClickHouse; tests also use an in-process chdb session)."""

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


class ReportError(ValueError):
    """A report was asked for something it cannot compute (unknown period or dimension, empty range)."""


@dataclass(frozen=True)
class Filters:
    """Which cases a report covers. Dates are Asia/Shanghai days: `since` inclusive, `until` exclusive.

    `grid` is a management-grid code (12 digits) or any prefix of cell codes; `category` is a code or a
    prefix of codes (`E05` = all street-order events); `kind` is `problem` or `device_fault` (None: both;
    discovery, recurrence and health count problems whatever it says, docs/cases.md §1).
    """

    since: date | None = None
    until: date | None = None
    subdistrict: str | None = None
    grid: str | None = None
    cell: str | None = None
    category: str | None = None
    team: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise ReportError(f"empty date range: since {self.since} is not before until {self.until}")
        if self.kind is not None and self.kind not in KINDS:
            raise ReportError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")

    def where(
        self, day: str, *, dated: bool = True, team: bool = False, prefix: str = "f_"
    ) -> tuple[str, dict[str, Any]]:
        """A WHERE condition ("1" when nothing is filtered) and its parameters.

        `day` is the SQL Date expression of a row's day; `dated=False` ignores the date range (e.g. for the
        earlier cases a recurrence is measured against); `team` applies the team filter; the kind filter
        applies when `kind` is set (rows with a `kind` column).
        """
        parts: list[str] = []
        params: dict[str, Any] = {}
        if dated and self.since:
            parts.append(f"{day} >= toDate(%({prefix}since)s)")
            params[f"{prefix}since"] = self.since.isoformat()
        if dated and self.until:
            parts.append(f"{day} < toDate(%({prefix}until)s)")
            params[f"{prefix}until"] = self.until.isoformat()
        if self.subdistrict:
            parts.append(f"subdistrict = %({prefix}subdistrict)s")
            params[f"{prefix}subdistrict"] = self.subdistrict
        if self.grid:
            parts.append(f"substring(cell, 1, length(%({prefix}grid)s)) = %({prefix}grid)s")
            params[f"{prefix}grid"] = self.grid
        if self.cell:
            parts.append(f"cell = %({prefix}cell)s")
            params[f"{prefix}cell"] = self.cell
        if self.category:
            parts.append(f"substring(category, 1, length(%({prefix}category)s)) = %({prefix}category)s")
            params[f"{prefix}category"] = self.category
        if team and self.team:
            parts.append(f"team = %({prefix}team)s")
            params[f"{prefix}team"] = self.team
        if self.kind:
            parts.append(f"kind = %({prefix}kind)s")
            params[f"{prefix}kind"] = self.kind
        return (" AND ".join(parts) or "1"), params


def period_expr(period: str, day: str) -> str:
    """SQL for the period (a Date) a row's `day` falls in."""
    if period not in PERIODS:
        raise ReportError(f"unknown period {period!r}; choose one of {', '.join(PERIODS)}")
    return PERIODS[period].format(d=day)


def dimension_expr(dimension: str, allowed: tuple[str, ...] = tuple(DIMENSIONS)) -> str:
    """SQL for a group key; `allowed` narrows the choice for tables without some columns."""
    if dimension not in allowed:
        raise ReportError(f"unknown grouping {dimension!r}; choose one of {', '.join(allowed)}")
    return DIMENSIONS[dimension]


def cases_latest(
    filters: Filters, columns: str, *, dated: bool = True, team: bool = True, prefix: str = "f_"
) -> tuple[str, dict[str, Any]]:
    """A subquery over the latest state of each case (`v_cases`), with the filters applied to that state.

    `dated=False` ignores the date range; `team=False` ignores the team filter (figures credited to someone
    else than the case's current team).
    """
    cond, params = filters.where("day", dated=dated, team=team, prefix=prefix)
    return f"SELECT {columns} FROM v_cases WHERE {cond}", params


def problems(filters: Filters) -> Filters:
    """The same filters over problem cases only (discovery, recurrence, evaluation: docs/cases.md §1)."""
    return replace(filters, kind="problem")


def as_date(value: Any) -> str:
    """A Date from either engine (date object or 'YYYY-MM-DD') as ISO text."""
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def epoch(at: datetime) -> int:
    """A datetime as epoch seconds for a parameter (naive = UTC), so no engine's time zone is involved."""
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def share(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide (never a fake 0%)."""
    return part / whole if whole else None


def relative_change(before: float | None, after: float | None) -> float | None:
    """(after − before) / before: +0.40 is the district's "+40%"; None when before is 0 or unknown."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before


NO_FILTERS = Filters()
"""Every case: the default of each report."""


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time (`2024-05-01T08:00:00+08:00`; UTC when it has no offset)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2024-05-01T08:00:00+08:00") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
