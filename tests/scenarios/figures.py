"""The report figures a scenario names (`expect.reports`), read from the real report SQL over its stored rows.

Sections and their figures (tests/scenarios/catalogue.py): discovery, discovery_by_day (the Grafana view),
recurrence, hot_spots (cell x category with at least 2 cases), sla (per team), dispatch, verification (all
verifiers together), closing, workload (per team). The range is [`since`, `as_of`) in Asia/Shanghai days:
`until` is the day after `as_of` unless `as_of` is a midnight.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.reports import Filters, discovery, hot_spots, recurrence, sla, workload
from pipeline.reports.query import Queryable
from tests.scenarios.catalogue import ExpectedReports, Scenario

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _filters(want: ExpectedReports) -> Filters:
    since = want.since.astimezone(SHANGHAI)
    as_of = want.as_of.astimezone(SHANGHAI)
    until = as_of.date() if (as_of.hour, as_of.minute, as_of.second) == (0, 0, 0) else as_of.date() + timedelta(1)
    return Filters(since=since.date(), until=max(until, since.date() + timedelta(1)))


def _pick(values: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    return {k: values.get(k, "<no such figure>") for k in want}


def actual(db: Queryable, s: Scenario) -> dict[str, Any]:
    """Every section the scenario names, with the figures it names, as the reports answer them."""
    want = s.expect.reports
    assert want is not None
    f, out = _filters(want), {}
    sections = dict(want.figures)
    if "discovery" in sections:
        rows = discovery(db, f, period="all")
        got = {"total": 0, "citizen": 0, "patrol": 0, "sensor": 0}
        for r in rows:
            got = {"total": got["total"] + r.total, "citizen": got["citizen"] + r.citizen,
                   "patrol": got["patrol"] + r.patrol, "sensor": got["sensor"] + r.sensor}
        out["discovery"] = _pick(got, sections["discovery"])
    if "discovery_by_day" in sections:
        days: dict[date, dict[str, Any]] = {}
        rows = db.query_dicts("SELECT toString(day) AS d, sum(total) AS total, sum(citizen) AS citizen, "
                              "sum(patrol) AS patrol, sum(sensor) AS sensor FROM v_discovery_daily GROUP BY d")
        for r in rows:
            days[date.fromisoformat(str(r["d"]))] = {k: int(r[k]) for k in ("total", "citizen", "patrol", "sensor")}
        out["discovery_by_day"] = {d: _pick(days.get(d, {}), w) for d, w in sections["discovery_by_day"].items()}
    if "recurrence" in sections:
        rows = recurrence(db, f, period="all")
        got = {"cases": sum(r.cases for r in rows), "recurrent": sum(r.recurrent for r in rows)}
        out["recurrence"] = _pick(got, sections["recurrence"])
    if "hot_spots" in sections:
        spots = hot_spots(db, f, min_cases=2)
        out["hot_spots"] = [_pick({"cell": h.cell, "category": h.category, "cases": h.cases,
                                   "recurrent": h.recurrent}, w) for h, w in zip(spots, sections["hot_spots"],
                                                                                 strict=False)]
        if len(spots) != len(sections["hot_spots"]):
            out["hot_spots"].append(f"{len(spots)} hot spots")
    report = sla(db, f, as_of=want.as_of) if {"sla", "dispatch", "verification", "closing"} & set(sections) else None
    if "sla" in sections:
        assert report is not None
        out["sla"] = {team: _pick(vars(report.team(team)) if report.team(team) else {}, w)
                      for team, w in sections["sla"].items()}
    if "dispatch" in sections:
        assert report is not None and report.dispatch is not None
        out["dispatch"] = _pick(vars(report.dispatch), sections["dispatch"])
    if "verification" in sections:
        assert report is not None
        got = {k: sum(getattr(v, k) for v in report.verification)
               for k in ("verified", "verified_on_time", "awaiting_verification", "verification_overdue")}
        out["verification"] = _pick(got, sections["verification"])
    if "closing" in sections:
        assert report is not None and report.closing is not None
        out["closing"] = _pick(vars(report.closing), sections["closing"])
    if "workload" in sections:
        rows = {r.team: vars(r) for r in workload(db, f, as_of=want.as_of)}
        out["workload"] = {team: _pick(rows.get(team, {}), w) for team, w in sections["workload"].items()}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def expected(s: Scenario) -> dict[str, Any]:
    """The figures the file names, as plain values."""
    want = s.expect.reports
    assert want is not None
    return {k: _plain(v) for k, v in want.figures.items() if k not in ("as_of", "since")}
