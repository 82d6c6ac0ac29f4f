"""The simulator's record of what happened: reports, feedback, incidents, device faults and hot spots (the
ground truth is made from these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.simulate.people import Caller
from pipeline.simulate.spec import FaultKind, Route, Scope
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
    spot: Spot | None = None          # where the grid puts it
    sensor_id: str | None = None      # iot: the alarming sensor
    scope: Scope | None = None        # iot: its type's scope (§2 rule 3)

    @property
    def cell(self) -> str:
        return "" if self.spot is None else self.spot.cell


@dataclass(frozen=True, slots=True)
class Action:
    """One team feedback message on `cityops.case-updates`, about round `round` (0-based) of its case."""

    at: datetime
    action: str                       # accept | resolve | verify | reject | reopen | extend
    team: str                         # the round's team; the verifier (supervision | patrol) for verify, reopen
    actor: str
    note: str
    round: int
    until: datetime | None = None     # extend: the new handling deadline (docs/cases.md §4.6)


@dataclass
class Round:
    """One dispatch of a case to a team (§3.1) over its whole planned life (the truth cuts it at the period's
    end): `ended_at` and `ending` say how it ended (rejected | superseded | reworked | verified)."""

    team: str
    route: Route
    kind: str                         # dispatch | reroute | rework
    why: str                          # first | merge (a more urgent report, §2.1) | reject | rework
    dispatched_at: datetime
    due_at: datetime
    accept_due_at: datetime
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    ended_at: datetime | None = None
    ending: str = ""
    verified_by: str = ""
    extensions: int = 0               # deadline extensions granted (延期, §4.6)
    extended_at: datetime | None = None

    @property
    def priority(self) -> int:
        return self.route.priority


@dataclass
class Incident:
    """A real problem in the simulated city and everything the simulator made it produce: one problem case."""

    incident_id: str
    district: str
    category: str
    kind: str                          # how it was planned: hotline | patrol | sensor | multi | hotspot | ...
    spot: Spot                         # where the case is (its first report's position)
    reports: list[Report] = field(default_factory=list)
    hotspot: str | None = None
    sensor_id: str | None = None
    case_id: str = ""
    rounds: list[Round] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    near_case: str | None = None       # a person's alarm planned next to this open case of its category
    closed_at: datetime | None = None  # the planned closing (verification), even after the period's end

    @property
    def first(self) -> Report:
        return self.reports[0]

    @property
    def discovered_by(self) -> str:
        return {"hotline": "citizen", "patrol": "patrol", "iot": "sensor"}[self.first.source]

    @property
    def scope(self) -> Scope | None:
        return self.first.scope


@dataclass(frozen=True, slots=True)
class Fault:
    """A device fault the worker must raise for a broken sensor (§6.3): `certain` False when the period's
    clock may end before the worker can tell (a silence near the end)."""

    kind: FaultKind
    at: datetime
    certain: bool


@dataclass
class Broken:
    """A broken sensor: how (stuck, silent, error), from which reading on, and the fault it must raise."""

    sensor_id: str
    sensor_type: str
    mode: FaultKind
    since: datetime                    # its first broken reading (silent: when its next reading was due)
    spot: Spot
    category: str
    fault: Fault | None                # None when the period ends before the fault condition is met
    case_id: str = ""
    event_id: str = ""


@dataclass
class Hotspot:
    """A chronic spot (城市管理顽疾): the same problem in the same cell, coming back after each case closed."""

    hotspot_id: str
    district: str
    category: str
    spot: Spot
    times: list[datetime] = field(default_factory=list)    # the planned first reports of its returns
    incidents: list[str] = field(default_factory=list)
