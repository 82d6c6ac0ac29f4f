"""Discovery rate (问题主动发现率): the share of problem cases first found by patrols or sensors, not by citizens.

Counted over **problem cases** (docs/cases.md §1: device faults are the maintainers' work, never discovered
problems), by the day (Asia/Shanghai), place and first source of each case's **latest state**: a case's first
report, and with it its day, cell and `discovered_by`, changes when a report older than the one that opened
it is processed later (the topics are consumed independently). The report sums the view `v_discovery_daily`
(migration 0004), which the dashboard reads too, so both give the same numbers.

    rate = (patrol + sensor) / total      over the problem cases created in the period (and group)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from pipeline.reports.query import (
    NO_FILTERS,
    Filters,
    Queryable,
    as_date,
    dimension_expr,
    period_expr,
    problems,
    relative_change,
    share,
)

_DIMENSIONS = ("none", "subdistrict", "grid", "cell", "category")


@dataclass(frozen=True)
class DiscoveryRow:
    """Problem cases of one period (and group) by first source; `rate` = (patrol + sensor) / total."""

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
    """Discovery counts of problem cases per period (day | week | month | all) and group, ordered by period
    then group. The team and kind filters do not apply (a case is discovered before any team has it)."""
    per = period_expr(period, "day")
    key = dimension_expr(by, _DIMENSIONS)
    # v_discovery_daily holds problem cases only; it has no team or kind column
    cond, params = replace(problems(filters), kind=None, team=None).where("day")
    sql = f"""
        SELECT toString({per}) AS period, {key} AS key,
               sum(total) AS n_total, sum(citizen) AS n_citizen, sum(patrol) AS n_patrol, sum(sensor) AS n_sensor
        FROM v_discovery_daily
        WHERE {cond}
        GROUP BY period, key
        ORDER BY period, key"""
    return [
        DiscoveryRow(
            as_date(r["period"]),
            str(r["key"]),
            int(r["n_total"]),
            int(r["n_citizen"]),
            int(r["n_patrol"]),
            int(r["n_sensor"]),
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
