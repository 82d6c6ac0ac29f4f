"""GET requests (the list method): its parameters, the live case states ClickHouse may not have yet, and the
merge of tickets that live only in memory (the unlocated queue) into a page of stored ones.

Parameters (GeoReport v2, with the paging extension):
- `start_date`, `end_date`: W3C date-times with an offset (a bare `YYYY-MM-DD` is that day's 00:00 in
  Asia/Shanghai, the district's calendar); both inclusive; at most 90 days apart. Neither: the last 90 days;
  one: 90 days from it (or up to it);
- `status`: `open`, `closed` or both, comma-separated (default both). A ticket is **closed** when its case is
  verified and closed (`verified`, `closed`); everything before is **open**: received, unlocated, `new`,
  `dispatched`, `accepted`, and `resolved` — a case resolved by its team is awaiting verification, and for the
  citizen it is not done until supervision has checked it;
- `service_code`: codes, comma-separated (default all); a code that is not a service is a 400;
- `service_request_id`: ids, comma-separated (at most 200); overrides every other parameter;
- `page` (from 1) and `page_size` (1-1000, default 1000): the spec's first 1,000 results are page 1;
- `extensions=true`: each request also carries `notes` (its update history), `attributes` and
  `extended_attributes`.
Results are ordered newest first (`requested_datetime`, then id), so pages are stable.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pipeline.model.taxonomy import Taxonomy
from pipeline.stages.decode import MAX_ID
from pipeline.stages.fields import InvalidEvent

MAX_DAYS = 90
MAX_PAGE_SIZE = 1000
MAX_IDS = 200
MAX_PAGE = 100_000
STATUSES = ("open", "closed")
CLOSED_STATES = ("verified", "closed")      # cityops case statuses that are Open311 `closed` (docs/cases.md §3)
SHANGHAI = ZoneInfo("Asia/Shanghai")
Key = tuple[float, str]         # a result's sort key: (-requested epoch, ticket event id)
T = TypeVar("T")


def open311_status(case_status: str | None) -> str:
    """The Open311 status of a ticket whose case is in `case_status` (None: no case yet)."""
    return "closed" if case_status in CLOSED_STATES else "open"


@dataclass(frozen=True)
class Search:
    """A parsed GET requests query (see the module docstring)."""

    start: datetime
    end: datetime
    statuses: frozenset[str] = frozenset(STATUSES)
    codes: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    page: int = 1
    page_size: int = MAX_PAGE_SIZE
    extensions: bool = False

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.page_size

    def matches(self, requested: float, code: str, status: str) -> bool:
        """Whether a ticket (requested at epoch `requested`, of service `code`, Open311 `status`) is in the
        search's window, services and statuses (for tickets held in memory)."""
        return (self.start.timestamp() <= requested <= self.end.timestamp()
                and (not self.codes or code in self.codes) and status in self.statuses)


def _w3_time(value: str, key: str) -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d")
            return day.replace(tzinfo=SHANGHAI).astimezone(UTC)
        at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{key}: not a W3C date-time (e.g. 2026-01-01T00:00:00Z): {text[:40]!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidEvent(f"{key}: a time needs its offset (Z or +08:00): {text[:40]!r}")
    return at.astimezone(UTC)


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _whole(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = (query.get(key) or "").strip()
    if not text:
        return default
    if not text.isdecimal() or not low <= int(text) <= high:
        raise InvalidEvent(f"{key}: a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def parse_search(query: Mapping[str, str], now: datetime, taxonomy: Taxonomy) -> Search:
    """The search a query string asks for; InvalidEvent (a 400) names the parameter that is wrong."""
    ids = _csv(query.get("service_request_id"))
    if len(ids) > MAX_IDS:
        raise InvalidEvent(f"service_request_id: at most {MAX_IDS} ids per query")
    if any(len(i) > MAX_ID for i in ids):
        raise InvalidEvent(f"service_request_id: an id is longer than {MAX_ID} characters")
    start = _w3_time(query["start_date"], "start_date") if query.get("start_date", "").strip() else None
    end = _w3_time(query["end_date"], "end_date") if query.get("end_date", "").strip() else None
    window = timedelta(days=MAX_DAYS)
    if start is None and end is None:
        end = now
    if start is None:
        assert end is not None
        start = end - window
    if end is None:
        end = start + window
    if end < start:
        raise InvalidEvent("end_date: before start_date")
    if end - start > window:
        raise InvalidEvent(f"start_date/end_date: at most {MAX_DAYS} days apart")
    statuses = {s.lower() for s in _csv(query.get("status"))} or set(STATUSES)
    wrong = sorted(statuses - set(STATUSES))
    if wrong:
        raise InvalidEvent(f"status: {wrong[0][:20]!r} is not open or closed")
    codes = _csv(query.get("service_code"))
    unknown = [c for c in codes if c not in taxonomy]
    if unknown:
        raise InvalidEvent(f"service_code: {unknown[0][:20]!r} is not a service (see services.xml)")
    if len(codes) > len(taxonomy.categories):
        raise InvalidEvent("service_code: a code is repeated")
    extensions = (query.get("extensions") or "false").strip().lower()
    if extensions not in ("true", "false"):
        raise InvalidEvent("extensions: true or false")
    return Search(start=start, end=end, statuses=frozenset(statuses), codes=tuple(dict.fromkeys(codes)),
                  ids=tuple(dict.fromkeys(ids)), page=_whole(query, "page", 1, 1, MAX_PAGE),
                  page_size=_whole(query, "page_size", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
                  extensions=extensions == "true")


@dataclass(frozen=True)
class Overrides:
    """Case states newer than ClickHouse may hold: `closed[i]` is whether case `ids[i]` at `revisions[i]` is
    Open311 `closed`. The search's status filter takes these over the stored state when they are newer."""

    ids: tuple[str, ...] = ()
    revisions: tuple[int, ...] = ()
    closed: tuple[int, ...] = ()


class RecentChanges:
    """The case states the web process received in the last `horizon_s` seconds (by their Kafka timestamps).

    The worker writes a case's ClickHouse rows at its next checkpoint (seconds), after the case state went out,
    so for a moment the live state is newer than the stored one: these are passed to the search's SQL, which
    takes the newer of the two for the status filter. Older changes are in ClickHouse already. At most `limit`
    cases are kept (the newest), so the SQL stays small.
    """

    def __init__(self, horizon_s: float = 900.0, limit: int = 2000, clock: Any = time.time) -> None:
        self.horizon_s, self.limit, self.clock = horizon_s, limit, clock
        self._states: OrderedDict[str, tuple[int, str, float]] = OrderedDict()

    def observe(self, items: Iterable[tuple[str, dict[str, Any] | None, float]]) -> None:
        """Feed items (kind, message, Kafka timestamp): case states are kept while recent."""
        oldest = self.clock() - self.horizon_s
        for kind, msg, ts in items:
            if kind != "case-state" or msg is None or ts < oldest:
                continue
            case_id, revision = msg.get("case_id"), msg.get("revision")
            if not isinstance(case_id, str) or not isinstance(revision, int):
                continue
            known = self._states.get(case_id)
            if known is not None and known[0] > revision:
                continue
            self._states[case_id] = (revision, str(msg.get("status")), ts)
            self._states.move_to_end(case_id)
        while len(self._states) > self.limit:
            self._states.popitem(last=False)

    def overrides(self) -> Overrides:
        oldest = self.clock() - self.horizon_s
        for case_id in [c for c, (_, _, ts) in self._states.items() if ts < oldest]:
            del self._states[case_id]
        ids = tuple(self._states)
        states = list(self._states.values())
        return Overrides(ids, tuple(r for r, _, _ in states),
                         tuple(int(open311_status(s) == "closed") for _, s, _ in states))


def sort_key(requested: float, event_id: str) -> Key:
    """Newest first, then by id: the order of every result list (the SQL orders the same way)."""
    return (-requested, event_id)


def fetch_window(skip: int, size: int, extra: int) -> tuple[int, int]:
    """(offset, limit) of the stored rows needed for results `skip`..`skip+size` when `extra` more results are
    merged in from memory: each of those can push a stored row back by one place."""
    offset = max(0, skip - extra)
    return offset, skip + size - offset


def merge_page(stored: Sequence[tuple[Key, T]], offset: int, exhausted: bool, extra: Sequence[tuple[Key, T]],
               skip: int, size: int) -> list[T]:
    """Results `skip`..`skip+size` of the merged order of all stored results and `extra` (both in key order),
    given only the stored results `offset`..`offset+len(stored)` (from `fetch_window`; `exhausted`: there are no
    more after them). Each item's place is its index plus the items of the other list before it; an extra item
    outside the fetched stretch is outside the page (see `fetch_window`), unless the stored list ended."""
    stored_keys = [k for k, _ in stored]
    extra_keys = [k for k, _ in extra]
    placed: list[tuple[int, T]] = []
    for i, (key, item) in enumerate(stored):
        placed.append((offset + i + bisect.bisect_left(extra_keys, key), item))
    for j, (key, item) in enumerate(extra):
        if offset > 0 and (not stored or key < stored_keys[0]):
            continue                    # before the fetched stretch: before the page
        if not exhausted and (not stored or key > stored_keys[-1]):
            continue                    # after the fetched stretch: after the page
        placed.append((j + offset + bisect.bisect_left(stored_keys, key), item))
    return [item for place, item in sorted(placed, key=lambda p: p[0]) if skip <= place < skip + size]
