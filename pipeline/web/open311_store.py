"""The Open311 requests as ClickHouse holds them: hotline tickets (`events`, source `hotline`), their cases'
latest state (`cases`) and history (`case_transitions`).

Every query runs on ClickHouse 18.16 and on current releases (tests/web/test_open311_requests.py runs both):
bound parameters only; the SQL text is put together from the fixed fragments below, chosen by key. Tables are
ReplacingMergeTree and may hold a replayed row twice until a merge, so rows are grouped by their key here
(`any` per ticket, `argMax(..., revision)` per case over non-Nullable values: on 18.16 argMax skips NULLs,
which would bring back a stale value) instead of read with FINAL, which is slow on 18.16.

A search reads its window's tickets narrowly first: which tickets, in order, make the page (event id and time;
with the status filtered, only tickets whose case is, or is not, in the set of closed cases). Then everything
about the page's tickets (at most 1,000), their cases' state (only of cases the web's live view does not hold)
and latest change, a query per table by primary key: 18.16 allows one JOIN per SELECT, and joins that repeat
the page's subquery cost more than the round trips. Whole case histories (`extensions=true`) are read for the
page's cases only.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.web.open311_search import CLOSED_STATES, Overrides, Search

HOTLINE = "hotline:"


class Query(Protocol):
    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class CaseFacts:
    """A case's latest state as stored (`revision` 0: not read, the live view has a newer one, or not stored
    yet) and its latest transition."""

    status: str
    team: str
    revision: int
    due_at: float | None
    closed_at: float | None
    last_change: float | None = None    # its latest transition


@dataclass(frozen=True)
class StoredTicket:
    """One hotline ticket as stored, with its case's latest stored state. Times are epoch seconds."""

    ticket_id: str
    case_id: str
    requested: float
    service_code: str
    lon: float | None
    lat: float | None
    description: str
    address: str
    address_id: str
    media_url: str
    attributes: str
    case: CaseFacts | None


@dataclass(frozen=True)
class Step:
    """One transition of a case (`case_transitions`)."""

    status: str
    team: str
    at: float
    reason: str


_CLOSED_SQL = "c_status IN (" + ", ".join(f"'{s}'" for s in CLOSED_STATES) + ")"
# a newer live state (Overrides) decides instead of the stored one
_CLOSED_LIVE_SQL = (
    "if(transform(case_id, %(o_ids)s, CAST(%(o_revs)s AS Array(UInt64)), toUInt64(0)) > c_rev, "
    "transform(case_id, %(o_ids)s, CAST(%(o_closed)s AS Array(UInt8)), toUInt8(0)) = 1, " + _CLOSED_SQL + ")"
)
_WINDOW_SQL = "source = 'hotline' AND received_at >= toDateTime(%(start)s) AND received_at <= toDateTime(%(end)s)"
_CODES_SQL = " AND category IN %(codes)s"

_KEYS_SQL = """
SELECT event_id, toUnixTimestamp(any(received_at)) AS requested
FROM events WHERE {where}{status} GROUP BY event_id
ORDER BY requested DESC, event_id
LIMIT %(skip)s, %(limit)s
"""
# the status filter: tickets whose case is (not) closed in its latest state; a ticket whose case row is not stored
# yet is open. Every stored case is read (by its key only: the window's own cases by `IN` cost four times as
# much on 18.16, a 64,000-key set against a month's 56,000 cases)
_STATUS_SQL = """ AND case_id {op} (
    SELECT case_id FROM (
        SELECT case_id, argMax(status, revision) AS c_status, max(revision) AS c_rev FROM cases GROUP BY case_id
    ) WHERE {closed})"""

_TICKETS_SQL = """
SELECT event_id, any(case_id) AS case_id, toUnixTimestamp(any(received_at)) AS requested,
       any(category) AS category, any(lon) AS lon, any(lat) AS lat, any(description) AS description,
       any(address) AS address, any(address_id) AS address_id, any(media_url) AS media_url,
       any(attributes) AS attributes
FROM events WHERE event_id IN %(ids)s GROUP BY event_id
"""
_CASES_SQL = """
SELECT case_id, argMax(status, revision) AS c_status, argMax(team, revision) AS c_team, max(revision) AS c_rev,
       argMax(ifNull(toUnixTimestamp(due_at), 0), revision) AS c_due,
       argMax(ifNull(toUnixTimestamp(closed_at), 0), revision) AS c_closed
FROM cases WHERE case_id IN %(ids)s GROUP BY case_id
"""
_LAST_SQL = ("SELECT case_id, toUnixTimestamp(max(at)) AS c_last FROM case_transitions WHERE case_id IN %(ids)s "
             "GROUP BY case_id")
_STEPS_SQL = ("SELECT case_id, seq, status, team, toUnixTimestamp(at) AS at, reason FROM case_transitions "
              "WHERE case_id IN %(ids)s")
_STORED_SQL = "SELECT DISTINCT event_id FROM events WHERE event_id IN %(ids)s"
_CHUNK = 1000


class RequestStore:
    """Read-only queries (blocking: call them from a thread)."""

    def __init__(self, db: Query) -> None:
        self.db = db

    def search_keys(self, search: Search, overrides: Overrides, offset: int, limit: int) -> list[tuple[str, float]]:
        """(ticket id, requested epoch) of the stored tickets the search finds, results `offset`.. `offset+limit`
        in result order (newest first)."""
        params: dict[str, Any] = {"start": int(search.start.timestamp()), "end": int(search.end.timestamp()),
                                  "skip": offset, "limit": limit}
        where = _WINDOW_SQL
        if search.codes:
            where += _CODES_SQL
            params["codes"] = tuple(search.codes)
        status = ""
        if len(search.statuses) == 1:
            closed = _CLOSED_SQL
            if overrides.ids:
                closed = _CLOSED_LIVE_SQL
                params |= {"o_ids": list(overrides.ids), "o_revs": list(overrides.revisions),
                           "o_closed": list(overrides.closed)}
            status = _STATUS_SQL.format(op="IN" if "closed" in search.statuses else "NOT IN", closed=closed)
        rows = self.db.query_dicts(_KEYS_SQL.format(where=where, status=status), params)
        return [(str(r["event_id"]).removeprefix(HOTLINE), float(r["requested"])) for r in rows]

    def tickets(self, ticket_ids: Sequence[str], live: Container[str] = ()) -> dict[str, StoredTicket]:
        """Everything stored about these tickets (ids as the hotline gave them), by id; absent ones left out.
        The stored state of cases in `live` (the web's live view holds a state at least as new) is not read."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks([HOTLINE + t for t in ticket_ids]):
            rows += self.db.query_dicts(_TICKETS_SQL, {"ids": tuple(chunk)})
        case_ids = sorted({str(r["case_id"]) for r in rows if r["case_id"]})
        facts = self._by_case(_CASES_SQL, [c for c in case_ids if c not in live])
        last = self._by_case(_LAST_SQL, case_ids)
        out: dict[str, StoredTicket] = {}
        for r in rows:
            ticket = _ticket(r, facts.get(str(r["case_id"])), last.get(str(r["case_id"])))
            out[ticket.ticket_id] = ticket
        return out

    def _by_case(self, sql: str, case_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(case_ids):
            out |= {str(r["case_id"]): r for r in self.db.query_dicts(sql, {"ids": tuple(chunk)})}
        return out

    def history(self, case_ids: Sequence[str]) -> dict[str, list[Step]]:
        """Each case's transitions in order (the `notes` of `extensions=true`)."""
        steps: dict[str, dict[int, Step]] = {}
        for chunk in _chunks(sorted(set(filter(None, case_ids)))):
            for r in self.db.query_dicts(_STEPS_SQL, {"ids": tuple(chunk)}):
                steps.setdefault(str(r["case_id"]), {})[int(r["seq"])] = Step(
                    str(r["status"]), str(r["team"]), float(r["at"]), str(r["reason"] or ""))
        return {case: [by_seq[k] for k in sorted(by_seq)] for case, by_seq in steps.items()}

    def stored(self, ticket_ids: Sequence[str]) -> set[str]:
        """Which of these tickets the worker has stored (the token method; the unlocated queue's leftovers)."""
        found: set[str] = set()
        for chunk in _chunks([HOTLINE + t for t in ticket_ids]):
            rows = self.db.query_dicts(_STORED_SQL, {"ids": tuple(chunk)})
            found |= {str(r["event_id"]).removeprefix(HOTLINE) for r in rows}
        return found


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _ticket(r: dict[str, Any], facts: dict[str, Any] | None, last: dict[str, Any] | None) -> StoredTicket:
    case = None
    if facts is not None or last is not None:
        f = facts or {}
        case = CaseFacts(status=str(f.get("c_status") or ""), team=str(f.get("c_team") or ""),
                         revision=int(f.get("c_rev") or 0), due_at=float(f.get("c_due") or 0) or None,
                         closed_at=float(f.get("c_closed") or 0) or None,
                         last_change=float(last["c_last"]) if last is not None else None)
    return StoredTicket(
        ticket_id=str(r["event_id"]).removeprefix(HOTLINE), case_id=str(r["case_id"] or ""),
        requested=float(r["requested"]), service_code=str(r["category"]), lon=_opt_float(r["lon"]),
        lat=_opt_float(r["lat"]), description=str(r["description"] or ""), address=str(r["address"] or ""),
        address_id=str(r["address_id"] or ""), media_url=str(r["media_url"] or ""),
        attributes=str(r["attributes"] or ""), case=case)
