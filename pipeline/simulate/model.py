"""The simulator's record of what happened: reports, feedback, incidents and hot spots (the ground truth)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.simulate.people import Caller
from pipeline.simulate.world import Spot

TOPIC_FIELDS = ("raw_hotline", "raw_patrol", "raw_iot", "case_updates")   # pipeline.config.Topics fields


@dataclass
class Report:
    """One message reporting a problem. An IoT report is the reading that raises the alarm (`message` None:
    it is part of the reading stream, not a separate message)."""

    source: str                       # hotline | patrol | iot
    at: datetime
    event_id: str                     # the worker's event id of the report
    key: str
    lon: float | None
    lat: float | None
    message: dict[str, Any] | None = None
    caller: Caller | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One team feedback message on `cityops.case-updates`."""

    at: datetime
    action: str                       # accept | resolve | verify | reject | reopen
    team: str
    actor: str
    note: str


@dataclass
class Round:
    """One dispatch of a case (the first, or after a reject or a reopen): who had it and until when."""

    team: str
    rule_id: str
    dispatched_at: datetime
    due_at: datetime
    resolved_at: datetime | None = None


@dataclass
class Incident:
    """A real problem in the simulated city and everything the simulator made it produce."""

    incident_id: str
    district: str
    category: str
    kind: str                          # hotline | patrol | sensor | multi | hotspot | flapping
    spot: Spot                         # where the case is (its first report's position)
    reports: list[Report] = field(default_factory=list)
    hotspot: str | None = None
    sensor_id: str | None = None
    case_id: str = ""
    rounds: list[Round] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    @property
    def first(self) -> Report:
        return self.reports[0]

    @property
    def discovered_by(self) -> str:
        return {"hotline": "citizen", "patrol": "patrol", "iot": "sensor"}[self.first.source]


@dataclass
class Hotspot:
    """A chronic spot (城市管理顽疾): the same problem in the same cell, again and again."""

    hotspot_id: str
    district: str
    category: str
    spot: Spot
    incidents: list[str] = field(default_factory=list)
