"""Service levels (docs/cases.md §8, "On time, and who is credited"): each figure, whom it is credited to, and
the denominator of each rate.

The population is the cases in the filter (created in the date range: the Asia/Shanghai day of the first
report; place, category, kind; all from the latest state, `v_cases`) and their dispatch rounds (`v_rounds`).
`as_of` (default: now) is the moment at which "due" and "overdue" are judged. The on-time tests themselves
(`resolved_on_time`, `closed_on_time`, ...) are columns of those views, the ones the dashboard reads.

**Teams** (`TeamSla`, one per team): the rounds dispatched to the team, each credited to **its own team**,
never to the case's last team.

- `rounds`: rounds dispatched to the team; `rejected` (the team said it is not theirs) and `superseded`
  (re-routed by a more urgent report) are counted apart and are never due for the team;
- `rounds_due`: rounds with `due_at` before as-of, neither rejected nor superseded (应处置数);
- `resolved`: rounds the team resolved (awaiting verification, verified, or reworked: a fix that failed its
  check counts as resolved, on time or not by its resolution, and as `reworked` too, 返工);
  `resolved_on_time`: of them, resolved at or before the round's `due_at`;
  `resolved_on_time_of_due`: of `rounds_due`, resolved at or before `due_at`;
  **`resolved_on_time_rate` = resolved_on_time_of_due / rounds_due** (按期处置率; a round left open past its
  due counts against the team, so leaving it open never looks better than resolving it late);
- `accepted`, `accepted_on_time` (at or before `accept_due_at`);
  **`accepted_on_time_rate` = accepted_on_time / accepted**;
- `overdue_open`: rounds still open (dispatched or accepted) with `due_at` before as-of;
- `to_accept`, `to_resolve`: median and p90 hours from the round's dispatch to its acceptance (over accepted
  rounds) / resolution (over resolved rounds).

**Dispatch** (`DispatchSla`, the command centre): `cases`; `dispatched` (a first dispatch is recorded);
`dispatched_on_time`: first dispatch at most the dispatch limit (default 30 min) after the first report;
**`dispatched_on_time_rate` = dispatched_on_time / dispatched**.

**Verification** (`VerificationSla`, one per verifier: supervision, or the patrol for supervision's own
resolutions), over the resolutions of the rounds: `verified`, `verified_on_time` (at or before
`verify_due_at`), **`verified_on_time_rate` = verified_on_time / verified**; `awaiting_verification`
(resolved, not verified yet) and `verification_overdue` (of those, `verify_due_at` before as-of).

**Closing** (`ClosingSla`, the cases): `closed`; `closed_on_time`: closed, its final resolution at or before
`case_due_at` and its verification at or before `verify_due_at`; `due`: `case_due_at` before as-of (应结案数),
`closed_of_due`, `closed_on_time_of_due`: the same among `due`. **`closed_on_time_rate` = closed_on_time /
closed**; **`close_rate` = closed_of_due / due** (结案率); **`closed_on_time_of_due_rate` =
closed_on_time_of_due / due** (按期结案率); `to_close`: median and p90 hours from the first report to closing.

With a team filter only the figures credited to that team are computed (its `TeamSla` and, when it verifies,
its `VerificationSla`); the dispatch and closing lines are nobody's team and are left out.

Durations are exact quantiles with ClickHouse's `quantileExact` definition: the value at position
floor(q·n) of the sorted durations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.reports.query import NO_FILTERS, Filters, Queryable, cases_latest, epoch, share


@dataclass(frozen=True)
class Durations:
    """Median and p90 of a duration in hours, over `n` rounds or cases (None when n is 0)."""

    n: int
    median_h: float | None
    p90_h: float | None


@dataclass(frozen=True)
class TeamSla:
    """One team's dispatch rounds (see the module docstring for each figure)."""

    team: str
    rounds: int
    rounds_due: int
    resolved: int
    resolved_on_time: int
    resolved_on_time_of_due: int
    accepted: int
    accepted_on_time: int
    reworked: int
    rejected: int
    superseded: int
    overdue_open: int
    to_accept: Durations
    to_resolve: Durations

    @property
    def resolved_on_time_rate(self) -> float | None:
        """resolved_on_time_of_due / rounds_due."""
        return share(self.resolved_on_time_of_due, self.rounds_due)

    @property
    def accepted_on_time_rate(self) -> float | None:
        """accepted_on_time / accepted."""
        return share(self.accepted_on_time, self.accepted)


@dataclass(frozen=True)
class DispatchSla:
    """The command centre's first dispatches of the cases."""

    cases: int
    dispatched: int
    dispatched_on_time: int
    dispatch_within_min: int

    @property
    def dispatched_on_time_rate(self) -> float | None:
        """dispatched_on_time / dispatched."""
        return share(self.dispatched_on_time, self.dispatched)


@dataclass(frozen=True)
class VerificationSla:
    """One verifier's checks of the rounds' resolutions."""

    verifier: str
    verified: int
    verified_on_time: int
    awaiting_verification: int
    verification_overdue: int

    @property
    def verified_on_time_rate(self) -> float | None:
        """verified_on_time / verified."""
        return share(self.verified_on_time, self.verified)


@dataclass(frozen=True)
class ClosingSla:
    """The cases' closing (结案)."""

    cases: int
    closed: int
    closed_on_time: int
    due: int
    closed_of_due: int
    closed_on_time_of_due: int
    to_close: Durations

    @property
    def closed_on_time_rate(self) -> float | None:
        """closed_on_time / closed."""
        return share(self.closed_on_time, self.closed)

    @property
    def close_rate(self) -> float | None:
        """closed_of_due / due (结案率)."""
        return share(self.closed_of_due, self.due)

    @property
    def closed_on_time_of_due_rate(self) -> float | None:
        """closed_on_time_of_due / due (按期结案率)."""
        return share(self.closed_on_time_of_due, self.due)


@dataclass(frozen=True)
class SlaReport:
    """Every service-level figure of the cases in a filter. Iterating gives the team lines."""

    teams: list[TeamSla]
    verification: list[VerificationSla]
    dispatch: DispatchSla | None     # None with a team filter
    closing: ClosingSla | None       # None with a team filter

    def __iter__(self) -> Iterator[TeamSla]:
        return iter(self.teams)

    def __len__(self) -> int:
        return len(self.teams)

    def team(self, name: str) -> TeamSla | None:
        """The line of team `name`, None when it had no round."""
        return next((t for t in self.teams if t.team == name), None)

    def verifier(self, name: str) -> VerificationSla | None:
        """The verification line of `name` (supervision | patrol), None when it had nothing to verify."""
        return next((v for v in self.verification if v.verifier == name), None)


def _durations(n: object, qs: object) -> Durations:
    count = int(n)  # type: ignore[call-overload]
    if not count:
        return Durations(0, None, None)
    values = list(qs)  # type: ignore[call-overload]
    return Durations(count, float(values[0]) / 3600, float(values[1]) / 3600)


def _rounds_of(filters: Filters, prefix: str) -> tuple[str, dict[str, Any]]:
    """The rounds (`v_rounds`) of the cases in the filter, whoever holds the case now."""
    cases, params = cases_latest(filters, "case_id", team=False, prefix=prefix)
    return f"SELECT * FROM v_rounds WHERE case_id IN ({cases})", params


def team_lines(db: Queryable, filters: Filters, as_of: int) -> list[TeamSla]:
    """One line per team over the rounds dispatched to it (the team filter: that team's rounds only)."""
    rounds, params = _rounds_of(filters, "t_")
    params["as_of"] = as_of
    team_cond = "1"
    if filters.team:
        team_cond, params["t_round_team"] = "team = %(t_round_team)s", filters.team
    sql = f"""
        SELECT team AS team_name,
            count() AS n_rounds,
            countIf(held AND toUInt32(due_at) < %(as_of)s) AS n_due,
            countIf(is_resolved) AS n_resolved,
            countIf(resolved_on_time) AS n_resolved_on_time,
            countIf(held AND toUInt32(due_at) < %(as_of)s AND resolved_on_time) AS n_resolved_on_time_of_due,
            countIf(is_accepted) AS n_accepted,
            countIf(is_accepted AND accepted_on_time) AS n_accepted_on_time,
            countIf(is_reworked) AS n_reworked,
            countIf(outcome = 'rejected') AS n_rejected,
            countIf(outcome = 'superseded') AS n_superseded,
            countIf(is_open AND toUInt32(due_at) < %(as_of)s) AS n_overdue_open,
            quantilesExactIf(0.5, 0.9)(ifNull(accept_s, 0), is_accepted) AS q_accept,
            quantilesExactIf(0.5, 0.9)(ifNull(resolve_s, 0), is_resolved) AS q_resolve
        FROM ({rounds})
        WHERE {team_cond}
        GROUP BY team_name
        ORDER BY team_name"""
    return [
        TeamSla(
            str(r["team_name"]),
            int(r["n_rounds"]),
            int(r["n_due"]),
            int(r["n_resolved"]),
            int(r["n_resolved_on_time"]),
            int(r["n_resolved_on_time_of_due"]),
            int(r["n_accepted"]),
            int(r["n_accepted_on_time"]),
            int(r["n_reworked"]),
            int(r["n_rejected"]),
            int(r["n_superseded"]),
            int(r["n_overdue_open"]),
            _durations(r["n_accepted"], r["q_accept"]),
            _durations(r["n_resolved"], r["q_resolve"]),
        )
        for r in db.query_dicts(sql, params)
    ]


def verification_lines(db: Queryable, filters: Filters, as_of: int) -> list[VerificationSla]:
    """One line per verifier over the resolutions of the rounds (the team filter: that verifier only)."""
    rounds, params = _rounds_of(filters, "v_")
    params["as_of"] = as_of
    cond = "is_resolved"
    if filters.team:
        cond += " AND verifier = %(v_verifier)s"
        params["v_verifier"] = filters.team
    sql = f"""
        SELECT verifier AS who,
            countIf(is_verified) AS n_verified,
            countIf(is_verified AND verified_on_time) AS n_verified_on_time,
            countIf(awaiting_verification) AS n_awaiting,
            countIf(awaiting_verification AND ifNull(toUInt32(verify_due_at) < %(as_of)s, 0)) AS n_overdue
        FROM ({rounds})
        WHERE {cond}
        GROUP BY who
        ORDER BY who"""
    return [
        VerificationSla(str(r["who"]), int(r["n_verified"]), int(r["n_verified_on_time"]), int(r["n_awaiting"]),
                        int(r["n_overdue"]))
        for r in db.query_dicts(sql, params)
    ]


def dispatch_line(db: Queryable, filters: Filters, dispatch_within_min: int) -> DispatchSla:
    """The command centre's first dispatches of the cases in the filter."""
    cases, params = cases_latest(filters, "first_dispatched_at, dispatch_s", team=False, prefix="d_")
    params["dispatch_s"] = dispatch_within_min * 60
    sql = f"""
        SELECT count() AS n_cases,
            countIf(first_dispatched_at IS NOT NULL) AS n_dispatched,
            countIf(first_dispatched_at IS NOT NULL AND ifNull(dispatch_s <= %(dispatch_s)s, 0)) AS n_on_time
        FROM ({cases})"""
    r = db.query_dicts(sql, params)[0]
    return DispatchSla(int(r["n_cases"]), int(r["n_dispatched"]), int(r["n_on_time"]), dispatch_within_min)


def closing_line(db: Queryable, filters: Filters, as_of: int) -> ClosingSla:
    """The closing of the cases in the filter."""
    cases, params = cases_latest(
        filters, "created_at, closed_at, case_due_at, is_closed, closed_on_time", team=False, prefix="c_"
    )
    params["as_of"] = as_of
    due = "ifNull(toUInt32(case_due_at) < %(as_of)s, 0)"
    sql = f"""
        SELECT count() AS n_cases,
            countIf(is_closed) AS n_closed,
            countIf(closed_on_time) AS n_closed_on_time,
            countIf({due}) AS n_due,
            countIf({due} AND is_closed) AS n_closed_of_due,
            countIf({due} AND closed_on_time) AS n_closed_on_time_of_due,
            countIf(is_closed AND closed_at IS NOT NULL) AS n_close,
            quantilesExactIf(0.5, 0.9)(toInt64(ifNull(toUInt32(closed_at), 0)) - toInt64(toUInt32(created_at)),
                                       is_closed AND closed_at IS NOT NULL) AS q_close
        FROM ({cases})"""
    r = db.query_dicts(sql, params)[0]
    return ClosingSla(int(r["n_cases"]), int(r["n_closed"]), int(r["n_closed_on_time"]), int(r["n_due"]),
                      int(r["n_closed_of_due"]), int(r["n_closed_on_time_of_due"]),
                      _durations(r["n_close"], r["q_close"]))


def sla(
    db: Queryable, filters: Filters = NO_FILTERS, dispatch_within_min: int = 30, as_of: datetime | None = None
) -> SlaReport:
    """Every figure of docs/cases.md §8 for the cases in `filters`, judged at `as_of` (default now);
    `dispatch_within_min` is the centre's dispatch limit (the ruleset's `time_limits.dispatch`)."""
    at = epoch(as_of or datetime.now(UTC))
    teams = team_lines(db, filters, at)
    verification = verification_lines(db, filters, at)
    if filters.team:
        return SlaReport(teams, verification, None, None)
    return SlaReport(teams, verification, dispatch_line(db, filters, dispatch_within_min),
                     closing_line(db, filters, at))
