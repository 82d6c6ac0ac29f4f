"""Position indicators of the patrols as reporters and checkers (issue #20): the inspectors' 有效上报率 and the
patrol's 按时核实率.

**Position: inspector** (监督员, by the `inspector` of their patrol reports; table `patrol_reports`, migration
0010, written by the worker: pipeline/stages/patrolreports.py):

- 上报数 `reports`: distinct patrol report ids the inspector observed in the period (Shanghai days), whatever
  became of them;
- 有效上报数 `valid`: of them, reports that opened a case or joined one (a report refused first and sent again
  corrected counts once, as valid);
- 作废数 `refused`: of them, refused at ingest and never applied (malformed, a category not in the
  taxonomy, a position that is no WGS84 point; a report outside the grid is kept, as a case outside the grid);
- 重复数 `duplicates`: of them, report ids that came again after they were applied (not a second report: counted
  in `reports` once);
- **有效上报率 `valid_rate` = valid / reports**.

**Position: checker** (核实, the patrol that checks public reports before they are filed: docs/cases.md §2.4, the
rules' `check_first`; each check is a round of kind `check` in `v_rounds`, its `due_at` the check deadline):

- 应核实数 `check_due`: checks whose deadline falls in the period (and before as-of), answered or not;
- 核实数 `check_done`: of them, answered (属实 confirmed or 作废 void) before as-of;
- 作废数 `check_void`: of them, voided (not a problem: never filed);
- 按时核实数 `check_in_time`: of them, answered at or before the deadline;
- **按时核实率 `check_in_time_rate` = check_in_time / check_due** (a check left unanswered counts against it).

The checker's figures take the usual place, category and `--team` filters (the check round's own).

Inspectors are evaluated over all their reports: `--team` keeps the inspectors of one patrol team, `--subdistrict`
those with a report located there; the other place and category filters do not apply (a refused report may have
no place or category). Dialect: ClickHouse 18.16 and current releases; no FINAL needed (distinct ids).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.reports.query import Filters, Queryable, problems, share

VALID = ("filed", "joined")


def inspector_values(db: Queryable, filters: Filters, period: Any) -> dict[str, dict[str, int | float | None]]:
    """Each inspector's reports, valid reports, refusals, duplicates and 有效上报率 in `period`
    (pipeline.reports.evaluation.Period)."""
    params: dict[str, Any] = {"i_since": period.since.isoformat(), "i_until": period.until.isoformat()}
    cond = ("toDate(observed_at, 'Asia/Shanghai') >= toDate(%(i_since)s)"
            " AND toDate(observed_at, 'Asia/Shanghai') < toDate(%(i_until)s)")
    if filters.team:
        cond += " AND team = %(i_team)s"
        params["i_team"] = filters.team
    if filters.subdistrict:
        # asked first, then bound: an IN subquery nested in the FROM subquery below is refused on the cluster
        there = db.query_dicts("SELECT DISTINCT inspector FROM patrol_reports WHERE subdistrict = %(i_sub)s",
                               {"i_sub": filters.subdistrict})
        if not there:
            return {}
        cond += " AND inspector IN %(i_there)s"
        params["i_there"] = tuple(sorted(str(r["inspector"]) for r in there))
    sql = f"""
        SELECT inspector AS unit,
            uniqExact(report_id) AS reports,
            uniqExactIf(report_id, outcome IN ('filed', 'joined')) AS valid,
            uniqExactIf(report_id, outcome = 'duplicate') AS duplicates
        FROM patrol_reports
        WHERE {cond}
        GROUP BY unit"""
    refused_sql = f"""
        SELECT inspector AS unit, count() AS refused
        FROM (
            SELECT inspector, report_id, sum(outcome IN ('filed', 'joined')) AS applied,
                sum(outcome = 'dead_letter') AS dead
            FROM patrol_reports
            WHERE {cond}
            GROUP BY inspector, report_id)
        WHERE dead > 0 AND applied = 0
        GROUP BY unit"""
    refused = {str(r["unit"]): int(r["refused"]) for r in db.query_dicts(refused_sql, params)}
    out: dict[str, dict[str, int | float | None]] = {}
    for r in db.query_dicts(sql, params):
        unit, n, valid = str(r["unit"]), int(r["reports"]), int(r["valid"])
        out[unit] = {"reports": n, "valid": valid, "refused": refused.get(unit, 0),
                     "duplicates": int(r["duplicates"]), "valid_rate": share(valid, n)}
    return out


def check_values(db: Queryable, filters: Filters, period: Any) -> dict[str, dict[str, int | float | None]]:
    """The checker's (核实) indicators per team answering checks (the patrol) in `period`."""
    cond, params = replace(problems(filters), kind=None).where("", dated=False, team=True, prefix="k_")
    params.update(period.params())
    due = ("kind = 'check' AND ifNull(toUInt32(due_at) >= %(p_t0)s AND toUInt32(due_at) < %(p_t1)s, 0)")
    done = "outcome IN ('confirmed', 'void') AND ifNull(toUInt32(ended_at) < %(p_as_of)s, 0)"
    sql = f"""
        SELECT team AS unit,
            countIf({due}) AS check_due,
            countIf({due} AND {done}) AS check_done,
            countIf({due} AND {done} AND outcome = 'void') AS check_void,
            countIf({due} AND {done} AND ifNull(ended_at <= due_at, 0)) AS check_in_time
        FROM v_rounds
        WHERE case_kind = 'problem' AND kind = 'check' AND {cond}
        GROUP BY unit
        HAVING check_due > 0"""
    out: dict[str, dict[str, int | float | None]] = {}
    for r in db.query_dicts(sql, params):
        n_due, n_in = int(r["check_due"]), int(r["check_in_time"])
        out[str(r["unit"])] = {"check_due": n_due, "check_done": int(r["check_done"]),
                               "check_void": int(r["check_void"]), "check_in_time": n_in,
                               "check_in_time_rate": share(n_in, n_due)}
    return out
