"""Factories for hand-built cases and dispatch rounds (docs/cases.md §3), and the two engines they are stored in.

A test builds the rows a worker would have written (`case(...)`, `round_(...)`), stores them through the real
sink (`Engine.write`: chdb in process, or the 18.16 server through `ClickHouseSink`) and compares the reports
with figures worked out by hand from the specification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from pipeline.model.records import CaseRow, RoundRow, SinkBatch, TransitionRow

T = datetime(2024, 5, 6, 2, 0)          # 10:00 in Shanghai, a Monday
H = timedelta(hours=1)
M = timedelta(minutes=1)
CELL = "310109009001001"
SUBDISTRICT = CELL[:9]


def case(
    case_id: str,
    *,
    team: str = "handling",
    status: str = "dispatched",
    created: datetime = T,
    cell: str = CELL,
    category: str = "E0501",
    discovered_by: str = "citizen",
    kind: str = "problem",
    due: datetime | None = None,
    case_due: datetime | None = None,
    dispatched: datetime | None = None,
    resolved: datetime | None = None,
    verify_due: datetime | None = None,
    closed: datetime | None = None,
    reopened: int = 0,
    rejected: int = 0,
    recurrence_of: str = "",
    revision: int = 1,
) -> CaseRow:
    """A case's state as the worker stores it; `due` is the current round's handling deadline, `case_due` the
    case's (defaults: both `T + 24 h`; first dispatch 5 min after creation)."""
    due = due or created + 24 * H
    return CaseRow(
        case_id, category, discovered_by, cell, cell[:9] or SUBDISTRICT, "street", team, status, 2, created, due,
        closed, 1, ("hotline",), reopened, "r1", "v1", "g1", revision, kind=kind,
        sensor_id="s-1" if kind == "device_fault" else "", recurrence_of=recurrence_of,
        first_dispatched_at=dispatched or created + 5 * M, case_due_at=case_due or due, resolved_at=resolved,
        verify_due_at=verify_due or (resolved + 24 * H if resolved else None), rejected=rejected,
    )


def round_(
    case_id: str,
    n: int,
    team: str,
    dispatched: datetime,
    due: datetime,
    *,
    outcome: str = "open",
    kind: str = "dispatch",
    accepted: datetime | None = None,
    resolved: datetime | None = None,
    ended: datetime | None = None,
    verified: datetime | None = None,
    verify_due: datetime | None = None,
    accept_due: datetime | None = None,
    cell: str = CELL,
    revision: int = 1,
) -> RoundRow:
    """One dispatch round; `accept_due` defaults to 2 h after dispatch, `verify_due` to 24 h after the
    resolution; a verified round is verified by supervision, or by the patrol when supervision resolved it."""
    return RoundRow(
        case_id, n, team, kind, "r1", 2, dispatched, due, accept_due or dispatched + 2 * H, accepted, resolved,
        ended or verified, outcome, None, verify_due or (resolved + 24 * H if resolved else None), verified,
        ("patrol" if team == "supervision" else "supervision") if verified else "", None, "E0501", "problem",
        cell, cell[:9], revision,
    )


def steps(c: CaseRow, *statuses: tuple[str, datetime]) -> list[TransitionRow]:
    """A case's transitions (the old reports read the first `dispatched` step's time from them)."""
    return [TransitionRow(c.case_id, i, s, c.team, "actor", at) for i, (s, at) in enumerate(statuses, 1)]


@dataclass
class Engine:
    """Where the rows go and where the reports read: a migrated database on chdb or on the server."""

    name: str
    db: Any
    write: Callable[[SinkBatch], None]


def engine_fixture(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The body of an `engine` fixture parametrized with "chdb" and "server" (the latter marked clickhouse)."""
    if request.param == "chdb":
        db = request.getfixturevalue("chdb_db")
        yield Engine("chdb", db, db.store)
        return
    from pipeline.sink.sink import ClickHouseSink

    db = request.getfixturevalue("server_db")
    sink = ClickHouseSink(request.getfixturevalue("isolated_settings"))
    try:
        yield Engine("server", db, sink.write)
    finally:
        sink.close()


ENGINES = ["chdb", pytest.param("server", marks=pytest.mark.clickhouse)]
