"""The Open311 GeoReport v2 API under /open311/v2, every method in XML (`.xml`) and JSON (`.json`).

    GET  services.{fmt}                 the taxonomy as services (`metadata` true: it has attributes)
    GET  services/{code}.{fmt}          a service definition: its attributes (pipeline.web.open311_services)
    POST requests.{fmt}                 a ticket in (api_key of an `ingest` client), answered with its id
    GET  tokens/{token}.{fmt}           the id of a posted ticket, once the worker has stored it
    GET  requests.{fmt}                 search (pipeline.web.open311_search): window, status, services, ids, pages
    GET  requests/{id}.{fmt}            one request
    GET  /open311/discovery.{fmt}       the service discovery document

Every method takes an optional `jurisdiction_id`; one other than the configured one
(`CITYOPS_OPEN311_JURISDICTION`, default `hongkou.sh.cn`) is a 400.

POST takes a form (the spec) or a JSON object. The hotline's own ticket number may be given as
`service_request_id` (a retry with the same number is the same ticket); otherwise one is made, so the answer
always carries the id (services are `realtime`), never a token. `tokens/{id}` answers that id back once the
worker has stored the ticket (404 before): a client written for `batch` servers can poll it. `attribute[CODE]`
(and `attribute[CODE][]` for several values) are checked against the service's definition; `media_url` must be
an http(s) URL; `address_id` is kept. Caller fields (`first_name`, `last_name`, `phone`) become the contract's
`caller` and are never echoed; `email`, `device_id` and `account_id` are not kept at all. The ticket is validated
by the worker's decoder and written to `cityops.raw.hotline`.

Errors (pipeline.web.open311_doc): 400 invalid (the reason names the parameter), 401 missing api_key, 403
unknown api_key, 404 unknown service, request or token, 413 body too large, 429 rate limited (`Retry-After`),
503 when Kafka does not acknowledge or ClickHouse does not answer a search.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.model.taxonomy import default_taxonomy
from pipeline.stages.fields import MAX_MESSAGE_BYTES, InvalidEvent
from pipeline.web.open311_answer import Ticket, answer, case_view, from_stored, from_unlocated
from pipeline.web.open311_doc import FORMATS, MIME_TYPES, Fmt, error, render
from pipeline.web.open311_post import read_params, ticket_from_params
from pipeline.web.open311_search import (
    RecentChanges,
    Search,
    fetch_window,
    merge_page,
    parse_search,
    sort_key,
)
from pipeline.web.open311_services import Catalogue, default_catalogue, load_catalogue
from pipeline.web.open311_store import HOTLINE, RequestStore, StoredTicket
from pipeline.web.users import User

Json = dict[str, Any]
Handler = Callable[[web.Request, Fmt], Awaitable[web.Response]]
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
MAX_MEMORY_RESULTS = 500        # unlocated tickets a search merges in (the newest)
_KEEP_TICKETS = 50_000


class RecentTickets:
    """Tickets this server accepted recently, so a status query right after a POST answers before the worker
    stored anything. Bounded, oldest dropped first."""

    def __init__(self, limit: int = _KEEP_TICKETS) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Ticket] = OrderedDict()

    def add(self, ticket: Ticket) -> None:
        self._items[ticket.ticket_id] = ticket
        self._items.move_to_end(ticket.ticket_id)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, ticket_id: str) -> Ticket | None:
        return self._items.get(ticket_id)


class Open311:
    """The handlers; `centre` is the application's `pipeline.web.centre.Centre`."""

    def __init__(self, centre: Any, catalogue: Catalogue | None = None) -> None:
        self.c = centre
        if catalogue is None:
            catalogue = default_catalogue() if centre.taxonomy is default_taxonomy() else \
                load_catalogue(centre.taxonomy)
        self.catalogue = catalogue
        self.recent = RecentTickets()
        self.changes = RecentChanges()
        centre.observers.append(self.changes.observe)
        db = getattr(centre.archive, "db", None)
        self.store = RequestStore(db) if db is not None else None

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for fmt in FORMATS:
            base = "/open311/v2"
            out += [web.get(f"/open311/discovery.{fmt}", self._in(self.discovery, fmt)),
                    web.get(f"{base}/services.{fmt}", self._in(self.get_services, fmt)),
                    web.get(f"{base}/services/{{code}}.{fmt}", self._in(self.get_service, fmt)),
                    web.post(f"{base}/requests.{fmt}", self._in(self.post_request, fmt)),
                    web.get(f"{base}/requests.{fmt}", self._in(self.get_requests, fmt)),
                    web.get(f"{base}/requests/{{id}}.{fmt}", self._in(self.get_request, fmt)),
                    web.get(f"{base}/tokens/{{token}}.{fmt}", self._in(self.get_token, fmt))]
        return out

    def _in(self, handler: Handler, fmt: Fmt) -> Callable[[web.Request], Awaitable[web.Response]]:
        """`handler` in format `fmt`, after the per-address rate limit and the jurisdiction check of a GET."""
        async def run(request: web.Request) -> web.Response:
            limited = self._limited(fmt, f"ip:{request.remote}")
            if limited:
                return limited
            if request.method == "GET":
                wrong = self._jurisdiction(fmt, request.query.get("jurisdiction_id"))
                if wrong:
                    return wrong
            return await handler(request, fmt)
        return run

    def _limited(self, fmt: Fmt, key: str) -> web.Response | None:
        wait = self.c.limiter.take(key)
        if wait > 0:
            return error(fmt, 429, f"rate limit exceeded for this client; retry in {wait:.1f} s",
                         headers={"Retry-After": str(max(1, round(wait + 0.5)))})
        return None

    def _jurisdiction(self, fmt: Fmt, given: Any) -> web.Response | None:
        served = self.c.settings.open311_jurisdiction
        if given is None or (isinstance(given, str) and not given.strip()):
            return None             # optional: this endpoint serves one jurisdiction
        if not isinstance(given, str) or given.strip() != served:
            return error(fmt, 400, f"jurisdiction_id: {str(given)[:60]!r} is not served here (this endpoint "
                                   f"serves {served})")
        return None

    # -- services ----------------------------------------------------------------------------------------

    async def discovery(self, request: web.Request, fmt: Fmt) -> web.Response:
        changeset = f"{datetime.fromtimestamp(self.c.started_at, UTC):%Y-%m-%d %H:%M}"
        doc = {"changeset": changeset,
               "contact": "区城运中心 district operations centre (cityops): ask the duty officer for access",
               "key_service": "POST needs an ingest client's api_key, issued by the operations centre "
                              "(cityops web adduser NAME --role ingest)",
               "endpoints": [{"specification": SPECIFICATION, "url": f"{request.url.origin()}/open311/v2",
                              "changeset": changeset, "type": "production" if self.c.production else "test",
                              "formats": list(MIME_TYPES)}]}
        return render(fmt, "discovery", doc)

    async def get_services(self, request: web.Request, fmt: Fmt) -> web.Response:
        return render(fmt, "services", self.catalogue.service_list())

    async def get_service(self, request: web.Request, fmt: Fmt) -> web.Response:
        code = request.match_info["code"]
        if code not in self.c.taxonomy:
            return error(fmt, 404, f"service_code {code[:40]!r} is not a service (see services.{fmt})")
        return render(fmt, "service_definition", self.catalogue.definition(code))

    # -- POST ------------------------------------------------------------------------------------------

    def _client(self, fmt: Fmt, request: web.Request, params: Json) -> User | web.Response:
        key = params.get("api_key") or request.headers.get("X-Api-Key")
        if not key:
            return error(fmt, 401, "api_key: required (an ingest client's key)")
        user: User | None = self.c.users.current.by_api_key(str(key))
        if user is None:
            return error(fmt, 403, "api_key: not a valid key")
        return user

    async def post_request(self, request: web.Request, fmt: Fmt) -> web.Response:
        try:
            params, answers = await read_params(request)
        except web.HTTPRequestEntityTooLarge:
            return error(fmt, 413, f"request body larger than {MAX_MESSAGE_BYTES} bytes")
        except InvalidEvent as err:
            return error(fmt, 400, err.reason)
        client = self._client(fmt, request, params)
        if isinstance(client, web.Response):
            return client
        wrong = self._jurisdiction(fmt, params.get("jurisdiction_id"))
        if wrong:
            return wrong
        limited = self._limited(fmt, f"client:{client.name}")
        if limited:
            return limited
        try:
            code = params.get("service_code")
            attributes = self.catalogue.check(code, answers) if isinstance(code, str) and code in \
                self.c.taxonomy else {}
            msg = ticket_from_params(params, attributes, datetime.now(UTC))
            raw = orjson.dumps(msg)
            event = self.c.decoder.hotline(raw)
        except InvalidEvent as err:
            return error(fmt, 400, err.reason)
        except (orjson.JSONEncodeError, TypeError, RecursionError):   # e.g. nesting deeper than JSON allows
            return error(fmt, 400, "body: nested too deeply or not serializable as a ticket")
        ticket_id = str(msg["service_request_id"]).strip()
        try:
            await asyncio.wait_for(self.c.outbox.send(self.c.settings.topics.raw_hotline, ticket_id, raw), 20)
        except Exception as err:  # Kafka unavailable or timed out: the client should retry
            return error(fmt, 503, f"could not queue the ticket ({type(err).__name__}); retry later",
                         headers={"Retry-After": "5"})
        self.c.counters.sent["hotline"] += 1
        self.recent.add(Ticket(ticket_id=ticket_id, requested=event.occurred_at.timestamp(),
                               service_code=event.category, stage="received", description=event.description,
                               address=event.address or "", address_id=event.address_id or "",
                               media_url=event.media_url or "", attributes=event.attributes or "",
                               lon=event.lon, lat=event.lat))
        return render(fmt, "service_requests", [{"service_request_id": ticket_id,
                                                 "service_notice": self.catalogue.notice(event.category),
                                                 "account_id": None}])

    # -- requests ----------------------------------------------------------------------------------------

    async def get_request(self, request: web.Request, fmt: Fmt) -> web.Response:
        ticket_id = request.match_info["id"]
        found = await self._by_ids([ticket_id], request.query.get("extensions", "").lower() == "true")
        if not found:
            return error(fmt, 404, f"service_request_id {ticket_id[:60]!r} not found")
        return render(fmt, "service_requests", found)

    async def get_requests(self, request: web.Request, fmt: Fmt) -> web.Response:
        try:
            search = parse_search(request.query, datetime.now(UTC), self.c.taxonomy)
        except InvalidEvent as err:
            return error(fmt, 400, err.reason)
        if search.ids:
            return render(fmt, "service_requests", await self._by_ids(list(search.ids), search.extensions))
        try:
            found = await self._search(search)
        except Exception as err:   # ClickHouse down or slow: nothing to search in
            return error(fmt, 503, f"search unavailable ({type(err).__name__}); retry later",
                         headers={"Retry-After": "5"})
        return render(fmt, "service_requests", found)

    async def get_token(self, request: web.Request, fmt: Fmt) -> web.Response:
        token = request.match_info["token"]
        stored = f"{HOTLINE}{token}" in self.c.board.unlocated
        if not stored and self.store is not None:
            try:
                stored = bool(await self.c.run_blocking(self.store.stored, [token]))
            except Exception as err:   # ClickHouse down: cannot tell yet
                return error(fmt, 503, f"token lookup unavailable ({type(err).__name__}); retry later",
                             headers={"Retry-After": "5"})
        if stored:
            return render(fmt, "service_requests", [{"service_request_id": token, "token": token}])
        if self.recent.get(token) is not None:
            return error(fmt, 404, f"token {token[:60]!r}: received, not stored yet; ask again in a few seconds")
        return error(fmt, 404, f"token {token[:60]!r} not found")

    def _memory_tickets(self, search: Search) -> list[Ticket]:
        """Unlocated tickets the search finds (open, never stored in a case yet), newest first."""
        if "open" not in search.statuses:
            return []
        found = []
        for event_id, msg in self.c.board.unlocated.items():
            ticket = from_unlocated(event_id.removeprefix(HOTLINE), msg)
            if search.matches(ticket.requested, ticket.service_code, "open"):
                found.append(ticket)
        found.sort(key=lambda t: sort_key(t.requested, HOTLINE + t.ticket_id))
        return found[:MAX_MEMORY_RESULTS]

    async def _search(self, search: Search) -> list[Json]:
        extra = self._memory_tickets(search)
        store = self.store
        if store is None:   # no ClickHouse configured (development): what this process holds
            return await self._answers(extra[search.skip:search.skip + search.page_size], {}, search.extensions)
        if extra:
            stored = await self.c.run_blocking(store.stored, [t.ticket_id for t in extra])
            extra = [t for t in extra if t.ticket_id not in stored]
        offset, limit = fetch_window(search.skip, search.page_size, len(extra))
        keys = await self.c.run_blocking(store.search_keys, search, self.changes.overrides(), offset, limit)
        page = merge_page([(sort_key(at, HOTLINE + tid), tid) for tid, at in keys], offset, len(keys) < limit,
                          [(sort_key(t.requested, HOTLINE + t.ticket_id), t) for t in extra],
                          search.skip, search.page_size)
        rows = await self.c.run_blocking(store.tickets, [p for p in page if isinstance(p, str)], self.c.board.cases)
        tickets = [from_stored(rows[p]) if isinstance(p, str) else p for p in page
                   if not isinstance(p, str) or p in rows]
        return await self._answers(tickets, rows, search.extensions)

    async def _by_ids(self, ids: list[str], extensions: bool) -> list[Json]:
        """Requests by id, in the order asked, from ClickHouse, the unlocated queue or this server's POSTs
        (answered from memory alone while ClickHouse is down)."""
        rows: dict[str, StoredTicket] = {}
        if self.store is not None:
            try:
                rows = await self.c.run_blocking(self.store.tickets, ids, self.c.board.cases)
            except Exception:  # ClickHouse down: answer from what is in memory
                rows = {}
        tickets: list[Ticket] = []
        for ticket_id in ids:
            unlocated = self.c.board.unlocated.get(HOTLINE + ticket_id)
            known = (from_stored(rows[ticket_id]) if ticket_id in rows
                     else from_unlocated(ticket_id, unlocated) if unlocated is not None
                     else self.recent.get(ticket_id))
            if known is not None:
                tickets.append(known)
        return await self._answers(tickets, rows, extensions)

    async def _answers(self, tickets: list[Ticket], rows: dict[str, StoredTicket], extensions: bool) -> list[Json]:
        """The answers for these tickets: their cases' newer state (stored or live) and history."""
        case_ids = [t.case_id for t in tickets if t.case_id]
        steps: dict[str, Any] = {}
        if self.store is not None and case_ids and extensions:
            try:
                steps = await self.c.run_blocking(self.store.history, case_ids)
            except Exception:  # the history is a detail: answer without it rather than not at all
                steps = {}
        out = []
        for t in tickets:
            stored = rows.get(t.ticket_id)
            facts = stored.case if stored is not None else None
            view = case_view(t.case_id, facts, self.c.board.cases.get(t.case_id)) if t.case_id else None
            history = steps.get(t.case_id)
            last = history[-1].at if history else facts.last_change if facts is not None else None
            out.append(answer(t, view, self.catalogue, last_change=last, steps=history, extensions=extensions))
        return out
