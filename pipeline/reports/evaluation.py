"""The standard evaluation (综合评价) of regions, departments and positions: indicators, scores and grades.

Each indicator is defined once, in pipeline.reports.indicators (`INDICATORS`: Chinese and English name, formula);
the README and `cityops report evaluation --help` print that table. Problem cases only (device faults are the
maintainers' work, docs/cases.md §1). A **period** is a range of Asia/Shanghai days [since, until); `as_of`
(default: the period's end, or now when that is earlier) is when "closed", "resolved" and "verified" are judged. The
lifecycle terms (round, rework, on time, credited to) are docs/cases.md §3, §4 and §8.

**Region** (district, sub-district, management grid; a case belongs to the region of its first report):

- 受理数 `received`: reports (hotline, patrol, sensor alarm) of problem cases made in the period, in the region;
- 立案数 `filed`: problem cases created (first report) in the period, except those still being checked before
  filing or voided by the check (核实, pipeline.reports.positions);
- 应结案数 `due`: problem cases whose deadline `case_due_at` falls in the period (and before as-of), whenever
  they were created, closed or not (the standard's denominator: leaving a case open never helps);
- 结案数 `closed`: of `due`, closed (verified) before as-of; **结案率 `close_rate` = closed / due**;
- 按期结案数 `closed_on_time`: of `due`, closed on time (final resolution <= case_due_at and verification <=
  verify_due_at, §8); **按期结案率 `closed_on_time_rate` = closed_on_time / due**;
- 超期未结案数 `overdue_unclosed` = due − closed (past their deadline, not closed as of as-of);
- 返工数 `reworked`: of `due`, cases sent back at least once (a failed check, §4.4, or a rejection, §4.3);
  **返工率 `rework_rate` = reworked / due**;
- 监督举报率 `public_report_rate` = filed first reported by the public (12345) / filed;
- 主动发现率 `discovery_rate` = filed first found by a patrol or a sensor / filed.

**Department** (each team the rules dispatch to; rounds credited to their own team, §8):

- 派遣数 `dispatched`: rounds dispatched to the team in the period (rejected and superseded ones included; the
  patrol's checks before filing are the checker's, pipeline.reports.positions);
- 应处置数 `due`: rounds held by the team (not rejected or superseded) whose `due_at` falls in the period;
- 处置数 `resolved`: of `due`, resolved before as-of (a fix that later failed its check included);
  **处置率 `resolve_rate` = resolved / due**;
- 按期处置数 `resolved_on_time`: of `due`, resolved at or before `due_at`;
  **按期处置率 `resolved_on_time_rate` = resolved_on_time / due**;
- 超期待处置数 `overdue_open` = due − resolved;
- 返工数 `reworked`: of `due`, rounds whose fix failed its check (outcome reworked);
  **返工率 `rework_rate` = reworked / due**;
- 延期数 `extended`: of `due`, rounds whose deadline was extended (延期, docs/cases.md §4.6: `due_at` is the
  extended deadline, so an extended round resolved by it is on time);
- 退回数 `rejected`: rounds the team rejected in the period (not theirs: never due, shown apart).

**Position: verifier** (核查: supervision, and the patrol for supervision's own fixes; §4):

- 应核查数 `verify_due`: resolutions whose `verify_due_at` (resolution + the verify limit of the priority)
  falls in the period;
- 核查数 `checked`: of them, checked before as-of: verified, or failed (sent back for rework);
  **核查率 `verify_rate` = checked / verify_due**;
- 按时核查数 `checked_on_time`: checked at or before `verify_due_at`;
  **按时核查率 `verified_on_time_rate` = checked_on_time / verify_due**.

**Position: patrol team** (巡查; its grids and categories: the patrol assignment file, pipeline/reports/
patrols.py, shipped as pipeline/data/patrols.yaml):

- 辖区立案数 `area_filed`: problem cases filed in the period in the team's grids, in the categories it covers;
- 巡查发现数 `patrol_found`: of them, first found by a patrol;
- 公众首报数 `public_first`: of them, first reported by the public (12345);
  **漏报率 `miss_rate` = public_first / area_filed** (what the patrol should have found first and did not).

**Scores**: each weighed indicator gets a 0–100 score (a rate where more is better: 100 × rate; where less is
better: 100 × (1 − rate); a count: 100 × count / the largest count among the units evaluated together); the
composite score is the weighted sum (weights: pipeline/data/evaluation_weights.yaml; an indicator with
nothing to divide is left out and the others scaled up); the grade is A–E by the file's bands.

Dialect: ClickHouse 18.16 and current releases (no window functions or CTEs); a subquery of a table is
`GLOBAL IN` (on the cluster layout the shards cannot resolve it themselves); every value is a bound parameter;
the only variable SQL text is chosen by key from `LEVELS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pipeline.reports.indicators import INDICATORS, REGION
from pipeline.reports.patrols import Patrol, load_patrols
from pipeline.reports.positions import check_values, inspector_values
from pipeline.reports.query import Filters, Queryable, ReportError, epoch, problems, share
from pipeline.reports.weights import Weights, load_weights

SHANGHAI = timedelta(hours=8)
Of = Literal["region", "department", "position"]


# region level -> the SQL of a case's (or report's) region
LEVELS: dict[str, str] = {
    "district": "substring(subdistrict, 1, 6)",
    "subdistrict": "subdistrict",
    "grid": "substring(cell, 1, 12)",
}


@dataclass(frozen=True)
class Unit:
    """One evaluated unit in one period: its indicator values, their scores, the composite score and grade."""

    of: str                       # region | department | position.verifier
    unit: str                     # region code, team, or verifier
    since: date
    until: date
    values: dict[str, int | float | None]
    scores: dict[str, float | None] = field(default_factory=dict)
    score: float | None = None
    grade: str | None = None


@dataclass(frozen=True)
class Period:
    since: date
    until: date
    t0: int                 # since 00:00 Shanghai, epoch seconds
    t1: int                 # the end of the counted span: min(until 00:00 Shanghai, as_of)
    as_of: int

    @staticmethod
    def of(since: date, until: date, as_of: datetime | None = None) -> Period:
        if since >= until:
            raise ReportError(f"empty period: {since} is not before {until}")
        t0 = _midnight(since)
        end = _midnight(until)
        # default: judged at the period's end, or now while the period is still running; a later as-of (e.g.
        # last month's cases judged today) counts what was closed since, never what fell due since
        at = min(end, int(datetime.now(UTC).timestamp())) if as_of is None else epoch(as_of)
        return Period(since, until, t0, min(end, at), at)

    def params(self) -> dict[str, Any]:
        return {"p_since": self.since.isoformat(), "p_until": self.until.isoformat(), "p_t0": self.t0,
                "p_t1": self.t1, "p_as_of": self.as_of}


def _midnight(d: date) -> int:
    return int((datetime(d.year, d.month, d.day, tzinfo=UTC) - SHANGHAI).timestamp())


def _in(col: str) -> str:
    """A nullable DateTime column within [t0, t1)."""
    return f"ifNull(toUInt32({col}) >= %(p_t0)s AND toUInt32({col}) < %(p_t1)s, 0)"


def _before_as_of(col: str) -> str:
    return f"ifNull(toUInt32({col}) < %(p_as_of)s, 0)"


def region_values(db: Queryable, filters: Filters, period: Period, level: str = "subdistrict"
                  ) -> dict[str, dict[str, int | float | None]]:
    """The region indicators of every region (at `level`) with a case or report in the period."""
    if level not in LEVELS:
        raise ReportError(f"unknown region level {level!r}; choose one of {', '.join(LEVELS)}")
    key = LEVELS[level]
    f = replace(problems(filters), team=None)
    cond, params = f.where("day", dated=False, prefix="r_")
    params.update(period.params())
    due = _in("case_due_at")
    closed = f"is_closed AND {_before_as_of('closed_at')}"
    # a case still being checked, or voided by the check, is not filed (核实, docs/cases.md §2.4)
    filed = "day >= toDate(%(p_since)s) AND day < toDate(%(p_until)s) AND status NOT IN ('checking', 'void')"
    sql = f"""
        SELECT {key} AS unit,
            countIf({filed}) AS filed,
            countIf({filed} AND discovered_by = 'citizen') AS by_public,
            countIf({filed} AND discovered_by IN ('patrol', 'sensor')) AS proactive,
            countIf({due}) AS due,
            countIf({due} AND {closed}) AS closed,
            countIf({due} AND {closed} AND closed_on_time) AS closed_on_time,
            countIf({due} AND (reopened > 0 OR rejected > 0)) AS reworked
        FROM v_cases
        WHERE {cond}
        GROUP BY unit
        HAVING filed > 0 OR due > 0"""
    out: dict[str, dict[str, int | float | None]] = {}
    for r in db.query_dicts(sql, params):
        n_filed, n_due, n_closed = int(r["filed"]), int(r["due"]), int(r["closed"])
        out[str(r["unit"])] = {
            "received": 0, "filed": n_filed, "due": n_due, "closed": n_closed,
            "close_rate": share(n_closed, n_due), "closed_on_time": int(r["closed_on_time"]),
            "closed_on_time_rate": share(int(r["closed_on_time"]), n_due),
            "overdue_unclosed": n_due - n_closed, "reworked": int(r["reworked"]),
            "rework_rate": share(int(r["reworked"]), n_due),
            "public_report_rate": share(int(r["by_public"]), n_filed),
            "discovery_rate": share(int(r["proactive"]), n_filed),
        }
    # 受理数: the reports themselves, by their own place and day
    econd, eparams = replace(f, kind=None).where("", dated=False, prefix="e_")
    eparams.update({"e_since": period.since.isoformat(), "e_until": period.until.isoformat()})
    esql = f"""
        SELECT {key} AS unit, uniqExact(event_id) AS received
        FROM events
        WHERE toDate(received_at, 'Asia/Shanghai') >= toDate(%(e_since)s)
            AND toDate(received_at, 'Asia/Shanghai') < toDate(%(e_until)s)
            AND {econd}
            AND case_id GLOBAL IN (SELECT case_id FROM v_cases WHERE is_problem)
        GROUP BY unit"""
    for r in db.query_dicts(esql, eparams):
        unit = str(r["unit"])
        row = out.setdefault(unit, {i: None for i in REGION} | {"filed": 0, "due": 0, "closed": 0,
                                                                   "closed_on_time": 0, "overdue_unclosed": 0,
                                                                   "reworked": 0})
        row["received"] = int(r["received"])
    return out


def department_values(db: Queryable, filters: Filters, period: Period) -> dict[str, dict[str, int | float | None]]:
    """The department indicators of every team with a round dispatched or due in the period."""
    f = problems(filters)
    cond, params = replace(f, kind=None).where("", dated=False, team=True, prefix="d_")
    params.update(period.params())
    due = f"held AND {_in('due_at')}"
    resolved = f"is_resolved AND {_before_as_of('resolved_at')}"
    sql = f"""
        SELECT team AS unit,
            countIf({_in('dispatched_at')}) AS dispatched,
            countIf({due}) AS due,
            countIf({due} AND {resolved}) AS resolved,
            countIf({due} AND {resolved} AND resolved_on_time) AS resolved_on_time,
            countIf({due} AND is_reworked AND {_before_as_of('ended_at')}) AS reworked,
            countIf({due} AND is_extended) AS extended,
            countIf(outcome = 'rejected' AND {_in('ended_at')}) AS rejected
        FROM v_rounds
        WHERE case_kind = 'problem' AND kind != 'check' AND {cond}
        GROUP BY unit
        HAVING dispatched > 0 OR due > 0 OR rejected > 0"""
    out: dict[str, dict[str, int | float | None]] = {}
    for r in db.query_dicts(sql, params):
        n_due, n_res, n_rw = int(r["due"]), int(r["resolved"]), int(r["reworked"])
        out[str(r["unit"])] = {
            "dispatched": int(r["dispatched"]), "due": n_due, "resolved": n_res,
            "resolve_rate": share(n_res, n_due), "resolved_on_time": int(r["resolved_on_time"]),
            "resolved_on_time_rate": share(int(r["resolved_on_time"]), n_due), "overdue_open": n_due - n_res,
            "reworked": n_rw, "rework_rate": share(n_rw, n_due), "extended": int(r["extended"]),
            "rejected": int(r["rejected"]),
        }
    return out


def verifier_values(db: Queryable, filters: Filters, period: Period) -> dict[str, dict[str, int | float | None]]:
    """The verifiers' indicators (supervision; the patrol for supervision's own fixes)."""
    f = replace(problems(filters), team=None)
    cond, params = replace(f, kind=None).where("", dated=False, prefix="v_")
    params.update(period.params())
    if filters.team:
        cond += " AND verifier = %(v_verifier)s"
        params["v_verifier"] = filters.team
    # a check: the verification, or the failed check that sent the round back (its end)
    check = "if(is_verified, verified_at, if(is_reworked, ended_at, NULL))"
    due = f"is_resolved AND {_in('verify_due_at')}"
    sql = f"""
        SELECT verifier AS unit,
            countIf({due}) AS verify_due,
            countIf({due} AND {_before_as_of(check)}) AS checked,
            countIf({due} AND {_before_as_of(check)} AND ifNull({check} <= verify_due_at, 0)) AS checked_on_time
        FROM v_rounds
        WHERE case_kind = 'problem' AND {cond}
        GROUP BY unit
        HAVING verify_due > 0"""
    out: dict[str, dict[str, int | float | None]] = {}
    for r in db.query_dicts(sql, params):
        n_due, n_checked, n_on_time = int(r["verify_due"]), int(r["checked"]), int(r["checked_on_time"])
        out[str(r["unit"])] = {"verify_due": n_due, "checked": n_checked, "verify_rate": share(n_checked, n_due),
                               "checked_on_time": n_on_time, "verified_on_time_rate": share(n_on_time, n_due)}
    return out


def patrol_values(db: Queryable, filters: Filters, period: Period, patrols: list[Patrol]
                  ) -> dict[str, dict[str, int | float | None]]:
    """Each patrol team's 漏报率 over the problem cases filed in its area and categories."""
    f = replace(problems(filters), team=None)
    out: dict[str, dict[str, int | float | None]] = {}
    for p in patrols:
        cond, params = f.where("day", dated=False, prefix="q_")
        params.update(period.params())
        area = []
        if p.subdistricts:
            area.append("subdistrict IN %(q_subs)s")
            params["q_subs"] = tuple(p.subdistricts)
        if p.grids:
            area.append("substring(cell, 1, 12) IN %(q_grids)s")
            params["q_grids"] = tuple(p.grids)
        cats = []
        for i, c in enumerate(p.categories):
            cats.append(f"substring(category, 1, {len(c)}) = %(q_c{i})s")   # len: of a validated code
            params[f"q_c{i}"] = c
        sql = f"""
            SELECT count() AS n, countIf(discovered_by = 'patrol') AS by_patrol,
                countIf(discovered_by = 'citizen') AS by_public
            FROM v_cases
            WHERE {cond} AND ({' OR '.join(area)}) AND ({' OR '.join(cats)})
                AND day >= toDate(%(p_since)s) AND day < toDate(%(p_until)s)"""
        r = db.query_dicts(sql, params)[0]
        n = int(r["n"])
        if n or not (filters.subdistrict or filters.grid or filters.cell):
            out[p.team] = {"area_filed": n, "patrol_found": int(r["by_patrol"]),
                           "public_first": int(r["by_public"]), "miss_rate": share(int(r["by_public"]), n)}
    return out


def score_units(of: str, period: Period, values: dict[str, dict[str, int | float | None]],
                weights: Weights) -> list[Unit]:
    """Score and grade the units evaluated together (counts are scored against the largest among them)."""
    w = weights.evaluations.get(of, {})
    defs = INDICATORS[of]
    peak = {k: max((float(v[k] or 0) for v in values.values()), default=0.0)
            for k in w if defs[k].scored == "count"}
    units = []
    for name in sorted(values):
        v = values[name]
        scores: dict[str, float | None] = {}
        for k in w:
            x = v.get(k)
            how = defs[k].scored
            if x is None:
                scores[k] = None
            elif how == "count":
                scores[k] = 100.0 * float(x) / peak[k] if peak[k] else None
            elif how == "less":
                scores[k] = 100.0 * (1.0 - float(x))
            else:
                scores[k] = 100.0 * float(x)
        counted = {k: s for k, s in scores.items() if s is not None}
        total_w = sum(w[k] for k in counted)
        score = sum(w[k] * s for k, s in counted.items()) / total_w if total_w else None
        if score is not None:
            score = round(score, 2)
        units.append(Unit(of, name, period.since, period.until, v, scores, score, weights.grade(score)))
    return units


def evaluate(db: Queryable, of: Of, filters: Filters, since: date, until: date, *,
             level: str = "subdistrict", as_of: datetime | None = None, weights: Weights | None = None,
             patrols: list[Patrol] | None = None) -> list[Unit]:
    """Every unit's indicators, scores and grade for one period [since, until) (Shanghai days); `of` is
    region (at `level`), department, or position (the verifiers, then the patrol teams of `patrols`, default
    the shipped assignment file, then the patrol inspectors: pipeline.reports.positions)."""
    w = weights or load_weights()
    p = Period.of(since, until, as_of)
    if of == "region":
        return score_units("region", p, region_values(db, filters, p, level), w)
    if of == "department":
        return score_units("department", p, department_values(db, filters, p), w)
    if of == "position":
        teams = load_patrols() if patrols is None else patrols
        return (score_units("position.verifier", p, verifier_values(db, filters, p), w)
                + score_units("position.patrol", p, patrol_values(db, filters, p, teams), w)
                + score_units("position.inspector", p, inspector_values(db, filters, p), w)
                + score_units("position.checker", p, check_values(db, filters, p), w))
    raise ReportError(f"unknown evaluation {of!r}; choose region, department or position")


def periods(since: date, until: date, period: str) -> list[tuple[date, date]]:
    """[since, until) split into days, weeks (Monday first), months, or kept whole (`all`)."""
    if period == "all":
        return [(since, until)]
    out = []
    a = since
    while a < until:
        if period == "day":
            b = a + timedelta(days=1)
        elif period == "week":
            b = a + timedelta(days=7 - a.weekday())
        elif period == "month":
            b = date(a.year + (a.month == 12), a.month % 12 + 1, 1)
        else:
            raise ReportError(f"unknown period {period!r}; choose day, week, month or all")
        out.append((a, min(b, until)))
        a = min(b, until)
    return out


def month_range(text: str) -> tuple[date, date]:
    """`2024-05` -> (2024-05-01, 2024-06-01)."""
    try:
        y, m = (int(x) for x in text.split("-"))
        a = date(y, m, 1)
    except ValueError as err:
        raise ReportError(f"{text!r}: write a month as YYYY-MM, e.g. 2024-05") from err
    return a, date(y + (m == 12), m % 12 + 1, 1)


def previous_month(since: date) -> tuple[date, date]:
    a = date(since.year - (since.month == 1), (since.month - 2) % 12 + 1, 1)
    return a, since
