"""The hotline ingest API, Open311 GeoReport v2 style, under /open311/v2.

- `GET services.json`: the taxonomy as Open311 services (`service_code` = category code, `group` = major class).
- `POST requests.json` (form-encoded or JSON; `api_key` parameter or `X-Api-Key` header of an `ingest` user):
  a ticket in, answered `[{"service_request_id": ..., "service_notice": ...}]`. The hotline's own ticket number
  may be given as `service_request_id` (a retry with the same number is the same ticket); otherwise one is
  made. Caller fields (`first_name`, `last_name`, `phone`) become the contract's `caller` and are never echoed;
  `email` and `device_id` are not kept at all. The ticket is validated by the worker's decoder and written to
  `cityops.raw.hotline`.
- `GET requests/{id}.json` and `GET requests.json?service_request_id=a,b`: status (`open` / `closed`), the
  team responsible, status notes; descriptions masked.

Errors are Open311-shaped, `[{"code": <status>, "description": <reason>}]`: 400 invalid (the decoder's reason),
401 missing api_key, 403 unknown api_key, 404 unknown request, 413 body too large, 429 rate limited (with
`Retry-After`), 503 when Kafka does not acknowledge.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.decode import MAX_MESSAGE_BYTES, InvalidEvent
from pipeline.privacy import mask_text
from pipeline.web.live import HANDLED
from pipeline.web.users import User

Json = dict[str, Any]
CLOSED = frozenset({"verified", "closed"})
MAX_IDS = 50
_KEEP_TICKETS = 50_000


def error(status: int, description: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response([{"code": status, "description": description}], status=status,
                             dumps=lambda o: orjson.dumps(o).decode(), headers=headers)


def ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class RecentTickets:
    """Tickets this server accepted recently (id -> requested time, code, masked description), so a status
    query right after a POST answers before the worker stored anything. Bounded, oldest dropped first."""

    def __init__(self, limit: int = _KEEP_TICKETS) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Json] = OrderedDict()

    def add(self, ticket_id: str, info: Json) -> None:
        self._items[ticket_id] = info
        self._items.move_to_end(ticket_id)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, ticket_id: str) -> Json | None:
        return self._items.get(ticket_id)


def services(taxonomy: Any) -> list[Json]:
    """The taxonomy as Open311 services."""
    majors = taxonomy.majors()
    out = []
    for code in taxonomy.codes():
        cat = taxonomy.get(code)
        out.append({"service_code": code, "service_name": cat.name, "description": f"{cat.major_name} / {cat.name}",
                    "metadata": False, "type": "realtime", "keywords": cat.kind,
                    "group": f"{cat.major_code} {majors.get(cat.major_code, '')}".strip()})
    return out


def _number(params: Json, key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"{key}: must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidEvent(f"{key}: must be a number, got {str(value)[:40]!r}") from None


def ticket_from_params(params: Json, now: datetime) -> Json:
    """The `cityops.raw.hotline` message for Open311 POST parameters (before the decoder validates it)."""
    ticket_id = params.get("service_request_id") or f"WEB{now:%Y%m%d}-{uuid.uuid4().hex[:10].upper()}"
    msg: Json = {"service_request_id": ticket_id, "service_code": params.get("service_code"),
                 "requested_datetime": params.get("requested_datetime")
                 or now.isoformat().replace("+00:00", "Z")}
    lat, lon = _number(params, "lat"), _number(params, "long")
    if lat is not None:
        msg["lat"] = lat
    if lon is not None:
        msg["long"] = lon
    for key in ("address_string", "description", "request_type", "channel"):
        if params.get(key) not in (None, ""):
            msg[key] = params[key]
    name = " ".join(str(params[k]).strip() for k in ("last_name", "first_name") if params.get(k))
    phone = params.get("phone")
    if name or phone:
        msg["caller"] = {k: v for k, v in (("name", name or None), ("phone", phone or None)) if v}
    return msg


async def read_params(request: web.Request) -> Json:
    """POST parameters from a form or JSON body (InvalidEvent when the body is neither)."""
    length = request.content_length
    if length is not None and length > MAX_MESSAGE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=length)
    body = await request.read()
    if len(body) > MAX_MESSAGE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=len(body))
    if request.content_type == "application/json":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise InvalidEvent(f"body: not valid JSON: {err}") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("body: must be a JSON object")
        return obj
    from urllib.parse import parse_qsl

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("body: not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def status_of(ticket_id: str, *, case: Json | None, unlocated: Json | None, recent: Json | None,
              taxonomy: Any) -> Json | None:
    """The Open311 service request for a ticket, from what is known about it (None when nothing is)."""
    if case is None and unlocated is None and recent is None:
        return None
    source = recent or {}
    code = (case or {}).get("category") or (unlocated or {}).get("category") or source.get("service_code")
    cat = taxonomy.get(code) if code else None
    out: Json = {"service_request_id": ticket_id, "service_code": code,
                 "service_name": cat.name if cat else None, "requested_datetime": source.get("requested_datetime")}
    if case is not None:
        status = str(case.get("status"))
        out |= {"status": "closed" if status in CLOSED else "open", "agency_responsible": case.get("team"),
                "status_notes": _notes(case), "expected_datetime": case.get("due_at"),
                "updated_datetime": case.get("closed_at") or case.get("resolved_at") or case.get("created_at"),
                "lat": case.get("lat"), "long": case.get("lon"), "case_id": case.get("case_id")}
    elif unlocated is not None:
        out |= {"status": "open", "status_notes": "地址待人工定位 address being placed on the map by an operator",
                "address": mask_text(str(unlocated.get("address") or ""))}
    else:
        out |= {"status": "open", "status_notes": "已受理 received, being processed"}
    if source.get("description"):
        out["description"] = source["description"]
    return out


def _notes(case: Json) -> str:
    status = str(case.get("status"))
    team = case.get("team")
    if status in CLOSED:
        return "已核查结案 verified and closed"
    if status in HANDLED:
        return f"已处置待核查 resolved by {team}, awaiting verification"
    if status == "accepted":
        return f"处置中 accepted by {team}"
    return f"已派遣 dispatched to {team}"


class Open311:
    """The handlers; `centre` is the application's `pipeline.web.app.Centre`."""

    def __init__(self, centre: Any) -> None:
        self.c = centre
        self.recent = RecentTickets()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/open311/v2/services.json", self.get_services),
                web.get("/open311/v2/services/{code}.json", self.get_service),
                web.post("/open311/v2/requests.json", self.post_request),
                web.get("/open311/v2/requests.json", self.get_requests),
                web.get("/open311/v2/requests/{id}.json", self.get_request)]

    def _limited(self, request: web.Request, key: str) -> web.Response | None:
        wait = self.c.limiter.take(key)
        if wait > 0:
            return error(429, f"rate limit exceeded for this client; retry in {wait:.1f} s",
                         headers={"Retry-After": str(max(1, round(wait + 0.5)))})
        return None

    async def get_services(self, request: web.Request) -> web.Response:
        return self._limited(request, f"ip:{request.remote}") or ok(services(self.c.taxonomy))

    async def get_service(self, request: web.Request) -> web.Response:
        limited = self._limited(request, f"ip:{request.remote}")
        if limited:
            return limited
        code = request.match_info["code"]
        if code not in self.c.taxonomy:
            return error(404, f"service_code {code!r} is not a service (see services.json)")
        return ok({"service_code": code, "attributes": []})

    def _client(self, request: web.Request, params: Json) -> User | web.Response:
        key = params.get("api_key") or request.headers.get("X-Api-Key")
        if not key:
            return error(401, "api_key: required (an ingest client's key)")
        user: User | None = self.c.users.current.by_api_key(str(key))
        if user is None:
            return error(403, "api_key: not a valid key")
        return user

    async def post_request(self, request: web.Request) -> web.Response:
        limited = self._limited(request, f"ip:{request.remote}")
        if limited:
            return limited
        try:
            params = await read_params(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body larger than {MAX_MESSAGE_BYTES} bytes")
        except InvalidEvent as err:
            return error(400, err.reason)
        client = self._client(request, params)
        if isinstance(client, web.Response):
            return client
        limited = self._limited(request, f"client:{client.name}")
        if limited:
            return limited
        try:
            msg = ticket_from_params(params, datetime.now(UTC))
            raw = orjson.dumps(msg)
            event = self.c.decoder.hotline(raw)
        except InvalidEvent as err:
            return error(400, err.reason)
        except (orjson.JSONEncodeError, TypeError, RecursionError):   # e.g. nesting deeper than JSON allows
            return error(400, "body: nested too deeply or not serializable as a ticket")
        ticket_id = str(msg["service_request_id"]).strip()
        try:
            await asyncio.wait_for(self.c.outbox.send(self.c.settings.topics.raw_hotline, ticket_id, raw), 20)
        except Exception as err:  # Kafka unavailable or timed out: the client should retry
            return error(503, f"could not queue the ticket ({type(err).__name__}); retry later",
                         headers={"Retry-After": "5"})
        self.c.counters.sent["hotline"] += 1
        self.recent.add(ticket_id, {"requested_datetime": msg["requested_datetime"], "service_code": event.category,
                                    "description": event.description[:1000], "at": time.time()})
        return ok([{"service_request_id": ticket_id,
                    "service_notice": "已受理，将派遣至处置队伍 received; it will be dispatched to a team",
                    "account_id": None}])

    async def _lookup(self, ticket_id: str) -> Json | None:
        event_id = f"hotline:{ticket_id}"
        unlocated = self.c.board.unlocated.get(event_id)
        case = None
        if unlocated is None and self.c.archive is not None:
            try:
                case_id = await self.c.run_blocking(self.c.archive.case_of_event, event_id)
            except Exception:  # ClickHouse down: answer from what is in memory
                case_id = None
            case = self.c.board.cases.get(case_id) if case_id else None
            if case_id and case is None:
                # the live board forgets only cases closed long ago
                case = {"case_id": case_id, "status": "closed"}
        return status_of(ticket_id, case=case, unlocated=unlocated, recent=self.recent.get(ticket_id),
                         taxonomy=self.c.taxonomy)

    async def get_request(self, request: web.Request) -> web.Response:
        limited = self._limited(request, f"ip:{request.remote}")
        if limited:
            return limited
        ticket_id = request.match_info["id"]
        found = await self._lookup(ticket_id)
        if found is None:
            return error(404, f"service_request_id {ticket_id!r} not found")
        return ok([found])

    async def get_requests(self, request: web.Request) -> web.Response:
        limited = self._limited(request, f"ip:{request.remote}")
        if limited:
            return limited
        ids = [i.strip() for i in request.query.get("service_request_id", "").split(",") if i.strip()]
        if not ids:
            return error(400, "service_request_id: give one or more ids, comma-separated")
        if len(ids) > MAX_IDS:
            return error(400, f"service_request_id: at most {MAX_IDS} ids per query")
        found = [f for f in [await self._lookup(i) for i in ids] if f is not None]
        return ok(found)
