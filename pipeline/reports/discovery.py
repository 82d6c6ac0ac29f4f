"""Discovery rate (问题主动发现率): the share of cases first found by patrols or sensors, not by citizens.

Read from the latest state of each case (`cases FINAL`), filtered after the deduplication: a case's first
source, time and place can change when a report older than the one that opened it is processed later (the
topics are consumed independently), so only the latest revision may be counted. The `cases_daily` aggregate
(migration 0002) keeps the first-seen attributes for dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pipeline.reports.query import (
    NO_FILTERS,
    TZ,
    Filters,
    Queryable,
    as_date,
    dimension_expr,
    period_expr,
    relative_change,
    share,
)

_DIMENSIONS = ("none", "subdistrict", "grid", "cell", "category")


@dataclass(frozen=True)
class DiscoveryRow:
    """Cases of one period (and group) by first source; `rate` = (patrol + sensor) / total."""

    period: str  # first day of the period, ISO
    key: str  # the group (sub-district, grid, cell or category); "" when not grouped
    total: int
    citizen: int
    patrol: int
    sensor: int

    @property
    def rate(self) -> float | None:
        return share(self.patrol + self.sensor, self.total)

    @property
    def patrol_share(self) -> float | None:
        return share(self.patrol, self.total)

    @property
    def sensor_share(self) -> float | None:
        return share(self.sensor, self.total)


def discovery(
    db: Queryable, filters: Filters = NO_FILTERS, period: str = "month", by: str = "none"
) -> list[DiscoveryRow]:
    """Discovery counts per period (day | week | month | all) and group, ordered by period then group."""
    per = period_expr(period, "day")
    key = dimension_expr(by, _DIMENSIONS)
    cond, params = filters.where("day")
    sql = f"""
        SELECT toString({per}) AS period, {key} AS key,
               count() AS total,
               countIf(discovered_by = 'citizen') AS citizen,
               countIf(discovered_by = 'patrol') AS patrol,
               countIf(discovered_by = 'sensor') AS sensor
        FROM (SELECT toDate(created_at, '{TZ}') AS day, subdistrict, cell, category, discovered_by
              FROM cases FINAL)
        WHERE {cond}
        GROUP BY period, key
        ORDER BY period, key"""
    return [
        DiscoveryRow(
            as_date(r["period"]),
            str(r["key"]),
            int(r["total"]),
            int(r["citizen"]),
            int(r["patrol"]),
            int(r["sensor"]),
        )
        for r in db.query_dicts(sql, params)
    ]


@dataclass(frozen=True)
class DiscoveryChange:
    """The discovery rate in two periods and its relative change (+0.40 = "+40%")."""

    before: DiscoveryRow
    after: DiscoveryRow

    @property
    def change(self) -> float | None:
        return relative_change(self.before.rate, self.after.rate)

    @property
    def points(self) -> float | None:
        """The change in percentage points (after − before) × 100."""
        b, a = self.before.rate, self.after.rate
        return None if a is None or b is None else (a - b) * 100


def discovery_change(
    db: Queryable, before: tuple[date, date], after: tuple[date, date], filters: Filters = NO_FILTERS
) -> DiscoveryChange:
    """Compare two date ranges ([since, until) each) under the same place and category filters."""
    rows = []
    for since, until in (before, after):
        f = Filters(since, until, filters.subdistrict, filters.grid, filters.cell, filters.category)
        got = discovery(db, f, period="all")
        rows.append(got[0] if got else DiscoveryRow("1970-01-01", "", 0, 0, 0, 0))
        rows[-1] = DiscoveryRow(
            since.isoformat(),
            f"{since.isoformat()}..{until.isoformat()}",
            rows[-1].total,
            rows[-1].citizen,
            rows[-1].patrol,
            rows[-1].sensor,
        )
    return DiscoveryChange(rows[0], rows[1])
