"""Builders for the Open311 tests: tickets through the worker's own chain into a ClickHouse database.

`District` runs the worker's chain in process — the decoder, the ingest stage (gazetteer, grid), the case books
and the shipped rules — and stores what it produces as the sink would, into a chdb database (current ClickHouse,
unit tests) or the real server (`clickhouse`-marked tests). So a stored ticket is exactly what a worker would
have stored, whichever way it came in (POST, the hotline topic, a replay), and its live case states can be fed to
the web app's board as the feed would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson

from pipeline.model.cases import CorrelationPolicy
from pipeline.model.records import SinkBatch
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import default_decoder
from pipeline.stages.ingest import Ingest
from pipeline.stages.lifecycle import Outcome
from pipeline.stages.registry import SensorRegistry, load_types
from pipeline.wire import Message
from rules.engine import Ruleset, load_ruleset
from tests.analytics.conftest import chdb_session
from tests.analytics.engines import ChdbDatabase

# North Sichuan Road, Hongkou (inside the shipped grid)
LAT, LON = 31.2605, 121.4838


@cache
def _grid() -> Any:
    from grid.index import GridIndex

    return GridIndex.load()


@cache
def _gazetteer() -> Any:
    from grid.gazetteer import Gazetteer

    return Gazetteer.load()


@cache
def _rules() -> Ruleset:
    return load_ruleset()


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ticket(ticket_id: str, at: datetime, code: str = "E0501", **fields: Any) -> bytes:
    """A `cityops.raw.hotline` message (the contract's format); `lat`/`long` default to North Sichuan Road
    unless an `address_string` is given."""
    msg: dict[str, Any] = {"service_request_id": ticket_id, "requested_datetime": iso(at), "service_code": code}
    if "address_string" not in fields:
        msg |= {"lat": LAT, "long": LON}
    msg.update(fields)
    return orjson.dumps(msg)


class District:
    """The worker's chain over hotline tickets and case updates, storing into `store(batch)`."""

    def __init__(self, store: Callable[[SinkBatch], None]) -> None:
        self.store = store
        self.ingest = Ingest(decoder=default_decoder(), grid=_grid(), gazetteer=_gazetteer(),
                             sensors=SensorRegistry(load_types(), {}))
        self.stage = CaseStage(_rules(), CorrelationPolicy())
        self.books: dict[str, CaseBook] = {}
        self.offset = 0
        self.unlocated: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {}

    def _run(self, topic: str, raws: list[bytes]) -> Outcome:
        msgs = []
        for raw in raws:
            msgs.append(Message(topic, 0, self.offset, raw, None))
            self.offset += 1
        res = self.ingest.updates(msgs) if topic == "cityops.case-updates" else self.ingest.reports("hotline", msgs)
        assert not res.deadletters, [d.reason for d in res.deadletters]
        self.unlocated += [orjson.loads(u) for u in res.unlocated]
        out = self.stage.apply(res.located, self.books)
        self.store(SinkBatch(cases=list(out.cases.values()), events=list(out.events),
                             transitions=list(out.transitions)))
        self.states.update(out.states)
        return out

    def tickets(self, *raws: bytes) -> Outcome:
        """Hotline tickets, in this order, as one batch."""
        return self._run("cityops.raw.hotline", list(raws))

    def update(self, case_id: str, action: str, team: str, at: datetime, note: str = "") -> Outcome:
        msg = {"case_id": case_id, "action": action, "team": team, "actor": f"{team}-01", "at": iso(at)}
        if note:
            msg["note"] = note
        return self._run("cityops.case-updates", [orjson.dumps(msg)])

    def case_of(self, ticket_id: str) -> str:
        for book in self.books.values():
            for case in book.cases.values():
                if f"hotline:{ticket_id}" in case.event_ids:
                    return case.case_id
        raise KeyError(ticket_id)

    def live_items(self, ts: float | None = None) -> list[tuple[str, dict[str, Any] | None, float]]:
        """The latest case states and the unlocated tickets as the web feed would deliver them."""
        at = datetime.now(UTC).timestamp() if ts is None else ts
        return ([("case-state", s, at) for s in self.states.values()]
                + [("unlocated", u, at) for u in self.unlocated])


def chdb_database() -> Iterator[ChdbDatabase]:
    """A fresh, migrated chdb database (for a fixture); dropped afterwards."""
    db = ChdbDatabase(chdb_session(), "cityops_o311_" + uuid.uuid4().hex[:10])
    db.migrate()
    try:
        yield db
    finally:
        db.execute(f"DROP DATABASE IF EXISTS {db.database}")


NOW = datetime.now(UTC).replace(microsecond=0)


def hours_ago(n: float) -> datetime:
    """`n` hours before the tests started (one fixed instant, so times computed apart compare equal)."""
    return NOW - timedelta(hours=n)
