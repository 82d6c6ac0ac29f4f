"""The ground truth of a simulation, as JSON: what really happened, to compare with what the pipeline reports.

Built only from the planner's records (not from the pipeline), it says per incident where and what it was,
which source found it first, the case id the worker must give it, the team it must go to, and how far its
case got by the end of the simulated period; per hot spot how many cases it must have; and the counts of
malformed, unlocatable and unknown-sensor messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.simulate.model import Hotspot, Incident, Report, Round

STATUS_AFTER = {"accept": "accepted", "resolve": "resolved", "verify": "closed", "reject": "dispatched",
                "reopen": "dispatched"}


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class CaseOutcome:
    """How far a case got by the end of the period (only feedback before the end counts)."""

    status: str
    team: str
    closed_at: datetime | None
    resolved_at: datetime | None
    reopened: int
    rejected: int
    overdue: bool
    open_overdue: bool
    due_at: datetime


def outcome(incident: Incident, end: datetime, clock_end: datetime) -> CaseOutcome:
    """Replay the incident's feedback before `end` through the case lifecycle."""
    status, closed, resolved = "dispatched", None, None
    reopened = rejected = 0
    rounds: list[Round] = [r for r in incident.rounds if r.dispatched_at < end]
    for a in incident.actions:
        if a.at >= end:
            break
        status = STATUS_AFTER[a.action]
        if a.action == "verify":
            closed = a.at
        elif a.action == "resolve":
            resolved = a.at
        elif a.action in ("reopen", "reject"):
            closed = resolved = None
            reopened += a.action == "reopen"
            rejected += a.action == "reject"
    overdue = False
    for r in rounds:
        done = r.resolved_at if r.resolved_at is not None and r.resolved_at < end else clock_end
        overdue |= r.due_at < done
    last = rounds[-1]
    open_overdue = status in ("dispatched", "accepted") and last.due_at < clock_end
    return CaseOutcome(status, last.team, closed, resolved, reopened, rejected, overdue, open_overdue, last.due_at)


@dataclass
class Truth:
    """Everything a test needs to check the pipeline's reports against (see `to_json` for the file)."""

    start: datetime
    end: datetime
    seed: int
    districts: tuple[str, ...]
    grid_version: str
    ruleset_version: str
    incidents: list[Incident]
    hotspots: list[Hotspot]
    unlocated: list[Report]
    callers: list[tuple[str, str]]
    messages: dict[str, int]
    malformed: dict[str, int]
    malformed_kinds: dict[str, int]
    readings: int
    unknown_sensor_readings: int
    sensors: dict[str, Any]
    dropped: int
    clock_end: datetime
    outcomes: dict[str, CaseOutcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcomes = {i.incident_id: outcome(i, self.end, self.clock_end) for i in self.incidents}

    def hotspot_cases(self) -> dict[str, int]:
        return {h.hotspot_id: len(h.incidents) for h in self.hotspots}

    def discovered(self) -> dict[str, int]:
        return dict(Counter(i.discovered_by for i in self.incidents))

    def to_json(self) -> dict[str, Any]:
        by_id = {i.incident_id: i for i in self.incidents}
        incidents = []
        for i in self.incidents:
            o = self.outcomes[i.incident_id]
            incidents.append({
                "incident_id": i.incident_id, "kind": i.kind, "district": i.district, "category": i.category,
                "cell": i.spot.cell, "subdistrict": i.spot.subdistrict, "grid_kind": i.spot.grid_kind,
                "lon": i.spot.lon, "lat": i.spot.lat, "discovered_by": i.discovered_by,
                "first_event_id": i.first.event_id, "first_at": iso(i.first.at), "case_id": i.case_id,
                "reports": [{"source": r.source, "event_id": r.event_id, "at": iso(r.at)} for r in i.reports],
                "sources": sorted({r.source for r in i.reports}),
                "teams": [r.team for r in i.rounds if r.dispatched_at < self.end],
                "team": o.team, "status": o.status, "closed_at": iso(o.closed_at),
                "resolved_at": iso(o.resolved_at), "due_at": iso(o.due_at), "overdue": o.overdue,
                "open_overdue": o.open_overdue, "reopened": o.reopened, "rejected": o.rejected,
                "hotspot": i.hotspot, "sensor_id": i.sensor_id,
                "feedback": [{"action": a.action, "team": a.team, "at": iso(a.at)} for a in i.actions
                             if a.at < self.end],
            })
        outcomes = self.outcomes.values()
        return {
            "format": "cityops-sim-truth/1",
            "seed": self.seed, "start": iso(self.start), "end": iso(self.end), "districts": list(self.districts),
            "grid_version": self.grid_version, "ruleset_version": self.ruleset_version,
            "counts": {
                "messages": self.messages, "malformed": self.malformed, "malformed_kinds": self.malformed_kinds,
                "readings": self.readings, "unknown_sensor_readings": self.unknown_sensor_readings,
                "incidents": len(self.incidents), "cases": len(self.incidents),
                "discovered_by": self.discovered(),
                "proactive_share": round(sum(1 for i in self.incidents if i.discovered_by != "citizen")
                                         / max(1, len(self.incidents)), 4),
                "multi_source": sum(1 for i in self.incidents if len({r.source for r in i.reports}) > 1),
                "unlocated_tickets": len(self.unlocated),
                "closed": sum(1 for o in outcomes if o.status == "closed"),
                "overdue": sum(1 for o in outcomes if o.overdue),
                "open_overdue": sum(1 for o in outcomes if o.open_overdue),
                "reopened": sum(o.reopened for o in outcomes),
                "feedback": sum(1 for i in self.incidents for a in i.actions if a.at < self.end),
                "dropped_for_density": self.dropped,
            },
            "incidents": incidents,
            "hotspots": [{"hotspot_id": h.hotspot_id, "district": h.district, "cell": h.spot.cell,
                          "category": h.category, "cases": len(h.incidents),
                          "case_ids": [by_id[x].case_id for x in h.incidents]} for h in self.hotspots],
            "unlocated": [{"ticket": r.key, "at": iso(r.at),
                           "address": (r.message or {}).get("address_string")} for r in self.unlocated],
            "callers": [{"name": n, "phone": p} for n, p in self.callers],
            "sensors": self.sensors,
        }
