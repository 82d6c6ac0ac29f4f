"""Rows the pipeline stores in ClickHouse (CONTRACTS.md "ClickHouse"), as plain typed records.

The sink (pipeline.sink.sink) is the only module that knows how they are written; stages only build these.
Every row carries a stable id so that a replay writes the same key again and the table keeps one row
(ReplacingMergeTree with a `revision` column: the highest revision of a key wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pipeline.model.events import record


@record
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
    # docs/cases.md: the lifecycle facts the service-level figures and the evaluation count
    kind: str = "problem"                       # problem | device_fault
    sensor_id: str = ""                         # the sensor a person's or device's case belongs to
    recurrence_of: str = ""                     # the closed case this one returns after (§5), "" if none
    previous_closed_at: datetime | None = None  # when that case was closed
    first_dispatched_at: datetime | None = None
    case_due_at: datetime | None = None         # the case's handling deadline (round 1's, moved only earlier)
    resolved_at: datetime | None = None         # the current resolution (None when open or reworked)
    verify_due_at: datetime | None = None       # resolved_at + the verify limit of the priority
    rejected: int = 0                           # rounds that ended in a rejection
    escalations: int = 0                        # escalations made (handling and verification)


@record
class RoundRow:
    """One dispatch of a case to a team (docs/cases.md §3.1); (case_id, round) is its key, `revision` grows
    with each change (latest wins)."""

    case_id: str
    round: int                    # 1 for the first dispatch
    team: str
    kind: str                     # dispatch | reroute (after a rejection, or a more urgent merge) | rework
    rule_id: str
    priority: int
    dispatched_at: datetime
    due_at: datetime              # the round's handling deadline
    accept_due_at: datetime
    accepted_at: datetime | None
    resolved_at: datetime | None
    ended_at: datetime | None     # when its outcome was decided (None while open or resolved)
    outcome: str                  # open | resolved | verified | reworked | rejected | superseded
    escalated_at: datetime | None
    verify_due_at: datetime | None
    verified_at: datetime | None
    verified_by: str              # supervision | patrol, "" until verified
    verify_escalated_at: datetime | None
    category: str
    case_kind: str                # problem | device_fault
    cell: str
    subdistrict: str
    revision: int
    extensions: int = 0           # deadline extensions granted (延期, docs/cases.md §4.6; migration 0008)


@record
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
    # hotline only (Open311, migration 0007): the ticket's address as given (masked), its address-register id,
    # a link to its photo or video, and the answers to its service's attributes (JSON object text)
    address: str = ""
    address_id: str = ""
    media_url: str = ""
    attributes: str = ""


@record
class TransitionRow:
    """One step of a case's lifecycle; (case_id, seq) is its stable key."""

    case_id: str
    seq: int
    status: str
    team: str
    actor: str
    at: datetime
    reason: str = ""
    photo_url: str = ""           # a resolve's after photo (migration 0009), "" for every other step


@record
class PatrolReportRow:
    """One patrol report and what became of it (migration 0010; 有效上报率): (inspector, report_id, outcome) is
    its stable key. Inspectors are staff; a patrol report has no caller."""

    report_id: str
    inspector: str
    team: str
    observed_at: datetime
    outcome: str                  # filed | joined | duplicate | dead_letter
    reason: str = ""              # a dead letter's reason (masked)
    case_id: str = ""
    subdistrict: str = ""


@record
class SensorReadingRow:
    """Per-sensor aggregate for analysts: one row per sensor and minute (readings are not cases)."""

    sensor_id: str
    sensor_type: str
    minute: datetime
    readings: int
    last_value: float
    max_value: float
    cell: str
    registered: bool = True       # False: a device that reports without being in the sensor registry


_EPOCH = datetime(1970, 1, 1)


def epoch_seconds(dt: datetime) -> int:
    """Whole seconds since 1970-01-01 UTC; a naive datetime is UTC (DESIGN.md: times are UTC in storage).
    What the column builders hold in their DateTime columns (the sink writes rows' datetimes the same way)."""
    if dt.tzinfo is None:
        return int((dt - _EPOCH).total_seconds())
    return int(dt.timestamp())


class Columns:
    """One table's rows held column by column: one list per column, a row appended to all of them.

    The fast way to hand rows to the sink: a stage fills the lists as it goes (subclasses' `append`), the sink
    encodes each list in one pass, with no per-row objects to take apart. DateTime columns hold epoch seconds
    (`epoch_seconds`), not datetimes. The lists are public attributes named like the table's columns;
    `COLUMNS` lists them in the order of the row type's fields and `KEY` names the stable key (a replay of a
    key adds nothing: the sink keeps the last row of each key). Code that appends to the lists directly must
    append to every one of them.
    """

    __slots__ = ()
    COLUMNS: ClassVar[tuple[str, ...]]
    KEY: ClassVar[tuple[str, ...]]

    def __len__(self) -> int:
        return len(getattr(self, self.COLUMNS[0]))

    def lists(self) -> dict[str, list[Any]]:
        """Column name -> its list (the lists themselves, not copies)."""
        return {name: getattr(self, name) for name in self.COLUMNS}

    def extend(self, other: Columns) -> None:
        """Append all rows of `other` (a builder of the same table)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot extend {type(self).__name__} with {type(other).__name__}")
        for name in self.COLUMNS:
            getattr(self, name).extend(getattr(other, name))

    def check(self) -> None:
        """Raise ValueError when the lists differ in length (rows appended to some columns only)."""
        lengths = {name: len(getattr(self, name)) for name in self.COLUMNS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self).__name__}: columns differ in length: {lengths}")


class EventColumns(Columns):
    """`events` rows column by column (see `Columns`); the same fields as EventRow, times as epoch seconds."""

    COLUMNS = ("event_id", "source", "case_id", "category", "cell", "subdistrict", "received_at", "ingested_at",
               "lon", "lat", "snapped", "merged", "grid_version", "grid_kind", "request_type", "sensor_type",
               "value", "description", "address", "address_id", "media_url", "attributes")
    KEY = ("event_id",)
    __slots__ = COLUMNS

    def __init__(self) -> None:
        self.event_id: list[str] = []
        self.source: list[str] = []
        self.case_id: list[str] = []
        self.category: list[str] = []
        self.cell: list[str] = []
        self.subdistrict: list[str] = []
        self.received_at: list[int] = []
        self.ingested_at: list[int] = []
        self.lon: list[float | None] = []
        self.lat: list[float | None] = []
        self.snapped: list[bool] = []
        self.merged: list[bool] = []
        self.grid_version: list[str] = []
        self.grid_kind: list[str] = []
        self.request_type: list[str] = []
        self.sensor_type: list[str] = []
        self.value: list[float | None] = []
        self.description: list[str] = []
        self.address: list[str] = []
        self.address_id: list[str] = []
        self.media_url: list[str] = []
        self.attributes: list[str] = []

    def append(self, event_id: str, source: str, case_id: str, category: str, cell: str, subdistrict: str,
               received_at: int, ingested_at: int, lon: float | None, lat: float | None, snapped: bool,
               merged: bool, grid_version: str, grid_kind: str = "", request_type: str = "",
               sensor_type: str = "", value: float | None = None, description: str = "", address: str = "",
               address_id: str = "", media_url: str = "", attributes: str = "") -> None:
        """One row; arguments as EventRow's fields (same order and defaults), times as epoch seconds."""
        self.event_id.append(event_id)
        self.source.append(source)
        self.case_id.append(case_id)
        self.category.append(category)
        self.cell.append(cell)
        self.subdistrict.append(subdistrict)
        self.received_at.append(received_at)
        self.ingested_at.append(ingested_at)
        self.lon.append(lon)
        self.lat.append(lat)
        self.snapped.append(snapped)
        self.merged.append(merged)
        self.grid_version.append(grid_version)
        self.grid_kind.append(grid_kind)
        self.request_type.append(request_type)
        self.sensor_type.append(sensor_type)
        self.value.append(value)
        self.description.append(description)
        self.address.append(address)
        self.address_id.append(address_id)
        self.media_url.append(media_url)
        self.attributes.append(attributes)

    def add(self, row: EventRow) -> None:
        """Append an EventRow (its datetimes converted)."""
        self.append(row.event_id, row.source, row.case_id, row.category, row.cell, row.subdistrict,
                    epoch_seconds(row.received_at), epoch_seconds(row.ingested_at), row.lon, row.lat,
                    row.snapped, row.merged, row.grid_version, row.grid_kind, row.request_type,
                    row.sensor_type, row.value, row.description, row.address, row.address_id, row.media_url,
                    row.attributes)


class ReadingColumns(Columns):
    """`sensor_readings` rows column by column (see `Columns`); SensorReadingRow's fields, `minute` as epoch
    seconds."""

    COLUMNS = ("sensor_id", "sensor_type", "minute", "readings", "last_value", "max_value", "cell", "registered")
    KEY = ("sensor_id", "minute")
    __slots__ = COLUMNS

    def __init__(self) -> None:
        self.sensor_id: list[str] = []
        self.sensor_type: list[str] = []
        self.minute: list[int] = []
        self.readings: list[int] = []
        self.last_value: list[float] = []
        self.max_value: list[float] = []
        self.cell: list[str] = []
        self.registered: list[bool] = []

    def append(self, sensor_id: str, sensor_type: str, minute: int, readings: int, last_value: float,
               max_value: float, cell: str, registered: bool = True) -> None:
        """One row; arguments as SensorReadingRow's fields (same order), `minute` as epoch seconds."""
        self.sensor_id.append(sensor_id)
        self.sensor_type.append(sensor_type)
        self.minute.append(minute)
        self.readings.append(readings)
        self.last_value.append(last_value)
        self.max_value.append(max_value)
        self.cell.append(cell)
        self.registered.append(registered)

    def add(self, row: SensorReadingRow) -> None:
        """Append a SensorReadingRow (its minute converted)."""
        self.append(row.sensor_id, row.sensor_type, epoch_seconds(row.minute), row.readings, row.last_value,
                    row.max_value, row.cell, row.registered)


@dataclass
class SinkBatch:
    """What one worker batch writes; stored together before the batch's offsets are committed.

    Events and sensor readings may come as rows (`events`, `readings`), column by column (`event_columns`,
    `reading_columns`: the fast form), or both: the sink stores the rows and the columns of a table as one
    block, de-duplicated by key across both.
    """

    cases: list[CaseRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    readings: list[SensorReadingRow] = field(default_factory=list)
    rounds: list[RoundRow] = field(default_factory=list)
    event_columns: EventColumns = field(default_factory=EventColumns)
    reading_columns: ReadingColumns = field(default_factory=ReadingColumns)
    patrol_reports: list[PatrolReportRow] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.cases) + len(self.events) + len(self.transitions) + len(self.readings)
                + len(self.rounds) + len(self.event_columns) + len(self.reading_columns)
                + len(self.patrol_reports))
