"""The dispatch message: one assignment of a case's round to a team, as `cityops.assignments` carries it
(CONTRACTS.md), and its stable id."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pipeline.model.cases import iso
from pipeline.model.events import record


@record
class Assignment:
    """One message on `cityops.assignments` (CONTRACTS.md), keyed by team."""

    assignment_id: str
    case_id: str
    team: str
    priority: int
    due_at: datetime
    category: str
    cell: str
    subdistrict: str
    lat: float | None
    lon: float | None
    rule_id: str
    reason: str
    sources: tuple[str, ...]
    created_at: datetime
    kind: str = "dispatch"          # dispatch | reroute | rework | escalation
    escalate_to: str | None = None
    notify: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ruleset_version: str = ""
    grid_version: str = ""
    round: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "assignment_id": self.assignment_id, "case_id": self.case_id, "team": self.team,
            "priority": self.priority, "due_at": iso(self.due_at), "category": self.category,
            "cell": self.cell, "subdistrict": self.subdistrict, "lat": self.lat, "lon": self.lon,
            "rule_id": self.rule_id, "reason": self.reason, "sources": list(self.sources),
            "created_at": iso(self.created_at), "kind": self.kind, "escalate_to": self.escalate_to,
            "notify": list(self.notify), "tags": list(self.tags), "ruleset_version": self.ruleset_version,
            "grid_version": self.grid_version, "round": self.round,
        }


def assignment_id(case_id: str, round_no: int, kind: str) -> str:
    """Stable: the same round's dispatch (or escalation) replayed gives the same id."""
    return "A" + hashlib.sha1(f"{case_id}#{round_no}#{kind}".encode()).hexdigest()[:20]
