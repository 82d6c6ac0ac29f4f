"""Rows the pipeline stores in ClickHouse (CONTRACTS.md "ClickHouse"), as plain typed records.

The sink (pipeline.sink) is the only module that knows how they are written; stages only build these.
Every row carries a stable id so that a replay writes the same key again and the table keeps one row
(ReplacingMergeTree with a `revision` column: the highest revision of a key wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CaseRow:
    """The latest state of one case; `revision` grows with each state change (latest wins)."""

    case_id: str
    category: str
    discovered_by: str            # citizen | patrol | sensor: the source of the first report
    cell: str                     # "" when the case could not be placed in a cell
    subdistrict: str
    grid_kind: str
    team: str
    status: str                   # new | dispatched | accepted | resolved | verified | closed
    priority: int
    created_at: datetime
    due_at: datetime | None
    closed_at: datetime | None
    reports: int
    sources: tuple[str, ...]
    reopened: int
    rule_id: str
    ruleset_version: str
    grid_version: str
    revision: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """One input report, and the case it ended up in (its own or one it was merged into)."""

    event_id: str
    source: str                   # hotline | patrol | iot
    case_id: str
    category: str
    cell: str
    subdistrict: str
    received_at: datetime         # when the source says it happened (called / observed / measured)
    ingested_at: datetime         # when the worker processed it
    lon: float | None
    lat: float | None
    snapped: bool
    merged: bool                  # True when it joined an existing case
    grid_version: str
    grid_kind: str = ""
    request_type: str = ""        # hotline only
    sensor_type: str = ""         # iot only
    value: float | None = None    # iot only: the reading
    description: str = ""         # free text with phone numbers and ID numbers masked by the worker


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One step of a case's lifecycle; (case_id, seq) is its stable key."""

    case_id: str
    seq: int
    status: str
    team: str
    actor: str
    at: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SensorReadingRow:
    """Per-sensor aggregate for analysts: one row per sensor and minute (readings are not cases)."""

    sensor_id: str
    sensor_type: str
    minute: datetime
    readings: int
    last_value: float
    max_value: float
    cell: str


@dataclass
class SinkBatch:
    """What one worker batch writes; stored together before the batch's offsets are committed."""

    cases: list[CaseRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    readings: list[SensorReadingRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cases) + len(self.events) + len(self.transitions) + len(self.readings)
