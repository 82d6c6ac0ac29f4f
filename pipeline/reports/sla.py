"""Service levels per team: on-time dispatch and closure, time to accept / resolve / close, overdue cases.

For the cases created in the range (latest state, FINAL), with the first time each reached a status taken
from `case_transitions` (the minimum over its steps, so a replayed step changes nothing):

- dispatched on time: first `dispatched` step at most `dispatch_within_min` minutes after creation;
- closed on time: closed, with a due time, and `closed_at <= due_at`;
- time to accept / resolve: creation → first `accepted` / `resolved` step; time to close: creation →
  `closed_at`. Reported as median and p90 in hours, exact quantiles with ClickHouse's `quantileExact`
  definition: the value at position floor(q·n) of the sorted durations;
- overdue: not closed, and `due_at` earlier than `as_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.reports.query import NO_FILTERS, Filters, Queryable, cases_latest, epoch, share


@dataclass(frozen=True)
class Durations:
    """Median and p90 of a duration in hours, over `n` cases (None when n is 0)."""

    n: int
    median_h: float | None
    p90_h: float | None


@dataclass(frozen=True)
class SlaRow:
    """Service levels of one team."""

    team: str
    cases: int
    dispatched: int
    dispatched_on_time: int
    closed: int
    closed_with_due: int
    closed_on_time: int
    overdue_open: int
    to_accept: Durations
    to_resolve: Durations
    to_close: Durations

    @property
    def dispatch_on_time_rate(self) -> float | None:
        return share(self.dispatched_on_time, self.dispatched)

    @property
    def close_on_time_rate(self) -> float | None:
        return share(self.closed_on_time, self.closed_with_due)


def _durations(n: object, qs: object) -> Durations:
    count = int(n)  # type: ignore[call-overload]
    if not count:
        return Durations(0, None, None)
    values = list(qs)  # type: ignore[call-overload]
    return Durations(count, float(values[0]) / 3600, float(values[1]) / 3600)


def sla(
    db: Queryable, filters: Filters = NO_FILTERS, dispatch_within_min: int = 30, as_of: datetime | None = None
) -> list[SlaRow]:
    """One row per team, ordered by team."""
    cases, params = cases_latest(
        filters, "case_id, team, status, toUInt32(created_at) AS created, due_at, closed_at"
    )
    params["dispatch_s"] = dispatch_within_min * 60
    params["as_of"] = epoch(as_of or datetime.now(UTC))
    sql = f"""
        SELECT team AS team_name,
            count() AS cases,
            countIf(t_dispatched > 0) AS dispatched,
            countIf(t_dispatched > 0 AND t_dispatched - created <= %(dispatch_s)s) AS dispatched_on_time,
            countIf(status = 'closed') AS closed,
            countIf(status = 'closed' AND due_at IS NOT NULL) AS closed_with_due,
            countIf(status = 'closed' AND ifNull(closed_at <= due_at, 0)) AS closed_on_time,
            countIf(status != 'closed' AND ifNull(toUInt32(due_at) < %(as_of)s, 0)) AS overdue_open,
            countIf(t_accepted > 0) AS n_accept,
            quantilesExactIf(0.5, 0.9)(t_accepted - created, t_accepted > 0) AS q_accept,
            countIf(t_resolved > 0) AS n_resolve,
            quantilesExactIf(0.5, 0.9)(t_resolved - created, t_resolved > 0) AS q_resolve,
            countIf(status = 'closed' AND closed_at IS NOT NULL) AS n_close,
            quantilesExactIf(0.5, 0.9)(toUInt32(ifNull(closed_at, toDateTime(0))) - created,
                                       status = 'closed' AND closed_at IS NOT NULL) AS q_close
        FROM ({cases}) AS latest
        ANY LEFT JOIN
            (SELECT case_id,
                    minIf(toUInt32(at), status = 'dispatched') AS t_dispatched,
                    minIf(toUInt32(at), status = 'accepted') AS t_accepted,
                    minIf(toUInt32(at), status = 'resolved') AS t_resolved
             FROM case_transitions
             WHERE case_id IN (SELECT case_id FROM ({cases}))
             GROUP BY case_id) AS steps
        USING case_id
        GROUP BY team_name
        ORDER BY team_name"""
    return [
        SlaRow(
            str(r["team_name"]),
            int(r["cases"]),
            int(r["dispatched"]),
            int(r["dispatched_on_time"]),
            int(r["closed"]),
            int(r["closed_with_due"]),
            int(r["closed_on_time"]),
            int(r["overdue_open"]),
            _durations(r["n_accept"], r["q_accept"]),
            _durations(r["n_resolve"], r["q_resolve"]),
            _durations(r["n_close"], r["q_close"]),
        )
        for r in db.query_dicts(sql, params)
    ]
