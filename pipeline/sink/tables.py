"""The tables the sink writes (their columns, in the order migrations declare them) and the stable key each de-
duplicates by: rows and column builders of a `SinkBatch` become one column block per table, the last copy of a key
winning (builders' rows count after the rows), so a replayed batch adds no logical row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from operator import attrgetter
from typing import Any, TypeVar

import numpy as np

from pipeline.model.records import (
    CaseRow,
    Columns,
    EventRow,
    PatrolReportRow,
    RoundRow,
    SensorReadingRow,
    SinkBatch,
    TransitionRow,
    epoch_seconds,
)

Row = TypeVar("Row", CaseRow, EventRow, TransitionRow, SensorReadingRow, RoundRow, PatrolReportRow)


_EPOCH = datetime(1970, 1, 1)


_epoch = epoch_seconds      # seconds since the epoch; a naive datetime is UTC (DESIGN.md: times are UTC)


def _epoch_or_none(dt: datetime | None) -> int | None:
    return None if dt is None else _epoch(dt)


class SinkRejected(Exception):
    """The server refused a batch for a reason a retry cannot fix (schema or data error); names the table."""



@dataclass(frozen=True)
class TableSpec:
    """How one row type is stored: table, columns (= row attributes), its stable key (a row's key; the key's
    columns) and converters for some columns."""

    table: str
    columns: tuple[str, ...]
    key: Callable[[Any], Any]
    convert: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    key_columns: tuple[str, ...] = ()


_CASES = TableSpec(
    "cases",
    ("case_id", "category", "discovered_by", "cell", "subdistrict", "grid_kind", "team", "status", "priority",
     "created_at", "due_at", "closed_at", "reports", "sources", "reopened", "rule_id", "ruleset_version",
     "grid_version", "revision", "kind", "sensor_id", "recurrence_of", "previous_closed_at", "first_dispatched_at",
     "case_due_at", "resolved_at", "verify_due_at", "rejected", "escalations"),
    key=attrgetter("case_id"),
    convert={"created_at": _epoch, "due_at": _epoch_or_none, "closed_at": _epoch_or_none, "sources": list,
             "previous_closed_at": _epoch_or_none, "first_dispatched_at": _epoch_or_none,
             "case_due_at": _epoch_or_none, "resolved_at": _epoch_or_none, "verify_due_at": _epoch_or_none},
    key_columns=("case_id",),
)


_ROUNDS = TableSpec(
    "case_rounds",
    ("case_id", "round", "team", "kind", "rule_id", "priority", "dispatched_at", "due_at", "accept_due_at",
     "accepted_at", "resolved_at", "ended_at", "outcome", "escalated_at", "verify_due_at", "verified_at",
     "verified_by", "verify_escalated_at", "category", "case_kind", "cell", "subdistrict", "revision",
     "extensions"),
    key=attrgetter("case_id", "round"),
    convert={"dispatched_at": _epoch, "due_at": _epoch, "accept_due_at": _epoch, "accepted_at": _epoch_or_none,
             "resolved_at": _epoch_or_none, "ended_at": _epoch_or_none, "escalated_at": _epoch_or_none,
             "verify_due_at": _epoch_or_none, "verified_at": _epoch_or_none,
             "verify_escalated_at": _epoch_or_none},
    key_columns=("case_id", "round"),
)


_EVENTS = TableSpec(
    "events",
    ("event_id", "source", "case_id", "category", "cell", "subdistrict", "grid_kind", "received_at",
     "ingested_at", "lon", "lat", "snapped", "merged", "grid_version", "request_type", "sensor_type", "value",
     "description", "address", "address_id", "media_url", "attributes"),
    key=attrgetter("event_id"),
    # snapped/merged stay bools: the UInt8 writer packs True/False as 1/0 without a per-row conversion.
    convert={"received_at": _epoch, "ingested_at": _epoch},
    key_columns=("event_id",),
)


_TRANSITIONS = TableSpec(
    "case_transitions", ("case_id", "seq", "status", "team", "actor", "at", "reason", "photo_url"),
    key=attrgetter("case_id", "seq"), convert={"at": _epoch}, key_columns=("case_id", "seq"),
)


_READINGS = TableSpec(
    "sensor_readings",
    ("sensor_id", "sensor_type", "minute", "readings", "last_value", "max_value", "cell", "registered"),
    # registered stays a bool, like events' snapped/merged (the UInt8 writer packs True/False as 1/0)
    key=attrgetter("sensor_id", "minute"), convert={"minute": _epoch}, key_columns=("sensor_id", "minute"),
)


_PATROL_REPORTS = TableSpec(
    "patrol_reports",
    ("report_id", "inspector", "team", "observed_at", "outcome", "reason", "case_id", "subdistrict"),
    key=attrgetter("inspector", "report_id", "outcome"), convert={"observed_at": _epoch},
    key_columns=("inspector", "report_id", "outcome"),
)


# The notifier's attempts (pipeline.notify.ledger.NotificationRow), stored with `ClickHouseSink.write_rows`.
NOTIFICATIONS = TableSpec(
    "notifications",
    ("delivery_id", "attempt", "assignment_id", "case_id", "target", "channel", "channel_kind", "kind", "priority",
     "status", "error", "sent_at", "latency_ms", "since_assignment_ms"),
    key=attrgetter("delivery_id", "attempt"), convert={"sent_at": _epoch}, key_columns=("delivery_id", "attempt"),
)


def dedup(rows: Sequence[Row], key: Callable[[Row], Any],
          version: Callable[[Row], int] | None = None) -> list[Row]:
    """One row per key: the highest `version` (cases: revision), else the last one seen (a replay repeats
    the same content, so which copy wins does not matter)."""
    if version is None:
        return list(dict(zip(map(key, rows), rows, strict=True)).values())   # C speed; last copy wins
    best: dict[Any, Row] = {}
    for row in rows:
        k = key(row)
        old = best.get(k)
        if old is None or version(row) >= version(old):
            best[k] = row
    return list(best.values())


_SECOND = timedelta(seconds=1)


_TZINFO = attrgetter("tzinfo")


def _epochs(values: list[datetime]) -> list[int]:
    """Many `_epoch`s at once, in C-level passes: aware times (the worker's) by `timestamp()`, naive ones (UTC)
    by their distance from the epoch, a mixed list item by item. Flooring the float seconds is exact: with
    microsecond resolution the fraction stays at least 1e-6 below the next second, far more than a double's
    rounding error for times up to 2106 (the end of DateTime)."""
    if not values:
        return []
    zones = list(map(_TZINFO, values))
    if None not in zones:
        seconds = np.fromiter(map(datetime.timestamp, values), np.float64, len(values))
    elif zones.count(None) == len(zones):
        deltas = map(datetime.__sub__, values, repeat(_EPOCH))
        seconds = np.fromiter(map(timedelta.total_seconds, deltas), np.float64, len(values))
    else:
        return [_epoch(v) for v in values]
    out: list[int] = np.floor(seconds).astype(np.int64).tolist()
    return out


def to_columns(spec: TableSpec, rows: Sequence[Any]) -> list[list[Any]]:
    """Rows as one list per column, converted to what the driver writes without further checks."""
    columns: list[list[Any]] = []
    for name in spec.columns:
        values = list(map(attrgetter(name), rows))
        conv = spec.convert.get(name)
        if conv is _epoch:
            values = _epochs(values)
        elif conv is not None:
            values = list(map(conv, values))
        columns.append(values)
    return columns


def dedup_columns(spec: TableSpec, columns: list[list[Any]]) -> list[list[Any]]:
    """One row per key, like `dedup` without `version` does for rows: the last row of each key, in the order
    the keys first appear. Columns without a repeated key are returned as they are (no copy)."""
    at = [spec.columns.index(name) for name in spec.key_columns]
    keys: Iterable[Any] = columns[at[0]] if len(at) == 1 else zip(*(columns[i] for i in at), strict=True)
    n = len(columns[at[0]])
    last = dict(zip(keys, range(n), strict=True))      # key -> index of its last row, keys in first-seen order
    if len(last) == n:
        return columns
    keep = list(last.values())
    return [list(map(values.__getitem__, keep)) for values in columns]


def _table_columns(spec: TableSpec, rows: Sequence[Any], built: Columns | None = None) -> list[list[Any]]:
    """A table's rows and builder columns as one block of columns in `spec.columns` order, de-duplicated."""
    columns = to_columns(spec, rows)
    if built is not None and len(built):
        lists = built.lists()
        try:
            built.check()
            extra = [lists[name] for name in spec.columns]
        except (KeyError, ValueError) as err:
            raise SinkRejected(f"{spec.table}: {type(built).__name__} does not fit the table: {err}") from err
        columns = [values + more for values, more in zip(columns, extra, strict=True)] if rows else extra
    return dedup_columns(spec, columns)


def batch_columns(batch: SinkBatch) -> list[tuple[TableSpec, list[list[Any]]]]:
    """The batch per table as columns (rows converted, column builders joined), de-duplicated by stable key,
    in the order they are written. Rounds and cases go last (see `batch_blocks`); their highest revision wins."""
    rounds = dedup(batch.rounds, _ROUNDS.key, attrgetter("revision"))
    cases = dedup(batch.cases, _CASES.key, attrgetter("revision"))
    return [
        (_EVENTS, _table_columns(_EVENTS, batch.events, batch.event_columns)),
        (_TRANSITIONS, _table_columns(_TRANSITIONS, batch.transitions)),
        (_READINGS, _table_columns(_READINGS, batch.readings, batch.reading_columns)),
        (_PATROL_REPORTS, _table_columns(_PATROL_REPORTS, batch.patrol_reports)),
        (_ROUNDS, to_columns(_ROUNDS, rounds)),
        (_CASES, to_columns(_CASES, cases)),
    ]


def batch_blocks(batch: SinkBatch) -> list[tuple[TableSpec, list[Any]]]:
    """The batch's rows per table, de-duplicated by stable key, in the order they are written.

    Rounds, then cases go last: a report that sees a case's latest state will then also see its events,
    transitions and dispatch rounds (the service-level figures join a case's state to its rounds). The patrol
    reports are read on their own, never joined to a case's state.
    """
    return [
        (_EVENTS, dedup(batch.events, _EVENTS.key)),
        (_TRANSITIONS, dedup(batch.transitions, _TRANSITIONS.key)),
        (_READINGS, dedup(batch.readings, _READINGS.key)),
        (_PATROL_REPORTS, dedup(batch.patrol_reports, _PATROL_REPORTS.key)),
        (_ROUNDS, dedup(batch.rounds, _ROUNDS.key, attrgetter("revision"))),
        (_CASES, dedup(batch.cases, _CASES.key, attrgetter("revision"))),
    ]
