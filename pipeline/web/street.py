"""The web for the people on the street and on the wall (issue #21): photos, the feed's place, the wall screen.

Routes (added to the application by `register`; who may use them is decided with pipeline.web.auth):

    POST /api/photos            multipart: photo (the file), kind (after | report), case_id (after), upload_id
                                -> {url, ...}: the stored photo, its location metadata removed (pipeline.web.photos)
    GET  /photos/{id}.{ext}     a stored photo, to those who may see its case (or its uploader)
    GET  /wall                  the wall screen (operators, analysts)
    GET  /api/wall              what the wall screen shows

What a feed row says of the place is pipeline.web.places.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import BodyPartReader, web

from pipeline.config import environ
from pipeline.web import auth
from pipeline.web.photos import (
    CONTENT_TYPES,
    MAX_PHOTO_BYTES,
    PhotoError,
    PhotoMeta,
    Photos,
    describe,
    parse_photo_url,
    photo_id_for,
    store_from_env,
)
from pipeline.web.places import after_photo_rule
from pipeline.web.users import User

log = logging.getLogger("cityops.web.street")
SHANGHAI = ZoneInfo("Asia/Shanghai")
Json = dict[str, Any]
UserOf = Callable[[web.Request], User | None]
PHOTOS = web.AppKey("photos", Photos)
USER_OF = web.AppKey("user_of", object)
PAGE = web.AppKey("page", object)
CENTRE_OF = web.AppKey("street_centre", object)
EVENT_CASES = web.AppKey("photo_event_cases", dict)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _problem(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status)


def _user(request: web.Request, allowed: Callable[[User], bool]) -> User:
    user_of: UserOf = request.app[USER_OF]  # type: ignore[assignment]
    user = user_of(request)
    if user is None:
        if request.path.startswith("/api/") or request.path.startswith("/photos/"):
            raise web.HTTPUnauthorized(text='{"error": "sign in first"}', content_type="application/json")
        raise web.HTTPFound(f"/signin?next={request.path}")
    if not allowed(user):
        raise web.HTTPForbidden(text='{"error": "not allowed for your role or team"}', content_type="application/json")
    return user


# -- photos -----------------------------------------------------------------------------------------------

async def _read_upload(request: web.Request, max_bytes: int) -> tuple[dict[str, str], bytes | None]:
    """The form fields and the `photo` file of a multipart body, refusing a file over `max_bytes`."""
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPBadRequest(text='{"error": "send the photo as multipart/form-data (field photo)"}',
                                 content_type="application/json")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    data: bytes | None = None
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name
        if name == "photo":
            buf = bytearray()
            while True:
                chunk = await part.read_chunk(64 * 1024)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(buf))
            data = bytes(buf)
        elif name:
            text = (await part.read(decode=True))[:500]
            fields[name] = text.decode("utf-8", "replace")
    return fields, data


async def api_photo_upload(request: web.Request) -> web.Response:
    user = _user(request, lambda u: u.role == "member" or u.can_patrol)
    centre = request.app[CENTRE_OF]
    photos = request.app[PHOTOS]
    try:
        fields, data = await _read_upload(request, photos.max_bytes)
    except web.HTTPRequestEntityTooLarge:
        return _problem(413, f"photo: over the limit of {photos.max_bytes:,} bytes")
    if data is None:
        return _problem(400, "photo: no file in the form (field photo)")
    kind = fields.get("kind", "")
    case_id = fields.get("case_id", "")
    if kind == "after":
        case = centre.board.cases.get(case_id)   # type: ignore[attr-defined]
        if case is None or not auth.may_view_case(user, case):
            return _problem(404, f"no case {case_id or '(no case_id)'} visible to you")
        if "resolve" not in auth.allowed_actions(user, case):
            return _problem(409, f"an after photo goes with a resolve; you cannot resolve {case_id} now")
    elif kind == "report":
        if not user.can_patrol:
            return _problem(403, "only a patrol reports with a photo")
        case_id = ""
    else:
        return _problem(400, "kind: after (a resolve's photo, with case_id) or report (a patrol report's photo)")
    upload_id = fields.get("upload_id") or f"{time.time_ns()}"
    photo_id = photo_id_for(user.name, upload_id)
    try:
        meta = await asyncio.get_running_loop().run_in_executor(None, lambda: photos.save(
            data, photo_id=photo_id, kind=kind, uploader=user.name, team=str(user.team or user.patrol_team or ""),
            case_id=case_id))
    except PhotoError as err:
        return _problem(400, str(err))
    except OSError as err:
        log.warning("photo store: %s", err)
        return _problem(503, "the photo store is unavailable; try again")
    return _json(describe(meta) | {"photo_id": meta.photo_id}, 201)


async def _case_of_photo(request: web.Request, meta: PhotoMeta) -> Json | None:
    centre = request.app[CENTRE_OF]
    case_id = meta.case_id
    if not case_id and meta.event_id and centre.archive is not None:  # type: ignore[attr-defined]
        cache: dict[str, str] = request.app[EVENT_CASES]
        case_id = cache.get(meta.event_id, "")
        if not case_id:
            with contextlib.suppress(Exception):
                case_id = await centre.run_blocking(centre.archive.case_of_event, meta.event_id) or ""  # type: ignore[attr-defined]
            if case_id:
                cache[meta.event_id] = case_id
    case: Json | None = centre.board.cases.get(case_id) if case_id else None  # type: ignore[attr-defined]
    return case


async def get_photo(request: web.Request) -> web.StreamResponse:
    """A photo, to those who may see its case (the case's access rules) and to whoever took it."""
    user = _user(request, lambda u: True)
    photos = request.app[PHOTOS]
    name = request.match_info["name"]
    parsed = parse_photo_url(f"/photos/{name}")
    if parsed is None:
        return _problem(404, "no such photo")
    photo_id, ext = parsed
    loop = asyncio.get_running_loop()
    meta = await loop.run_in_executor(None, photos.meta, photo_id)
    if meta is None or meta.ext != ext:
        return _problem(404, "no such photo")
    if meta.uploader != user.name:
        case = await _case_of_photo(request, meta)
        if case is None or not auth.may_view_case(user, case):
            return _problem(404, "no such photo")     # the same answer as "not yours"
    data = await loop.run_in_executor(None, photos.read, meta)
    if data is None:
        return _problem(404, "no such photo")
    return web.Response(body=data, content_type=CONTENT_TYPES[ext],
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})


def check_action_photo(app: web.Application, user: User, case_id: str, case: Json, action: str,
                       photo_url: str) -> str | None:
    """Why an action's photo (or its absence) is refused, or None. A photo from this web goes only with a
    resolve of the case it was taken for; the rules' `after_photo` categories need one."""
    if photo_url:
        if action != "resolve":
            return "photo_url: only a resolve carries a photo (the after photo)"
        parsed = parse_photo_url(photo_url)
        meta = app[PHOTOS].meta(parsed[0]) if parsed else None
        if meta is None or meta.kind != "after" or meta.case_id != case_id or meta.uploader != user.name:
            return "photo_url: not an after photo you uploaded for this case (POST /api/photos first)"
        return None
    if action == "resolve":
        after = after_photo_rule(app[CENTRE_OF])
        if after is not None and after.required(str(case.get("category"))):
            return f"photo: a resolve of {case.get('category')} needs an after photo (the rules' after_photo)"
    return None


def check_report_photo(app: web.Application, user: User, photo_url: str) -> str | None:
    parsed = parse_photo_url(photo_url)
    meta = app[PHOTOS].meta(parsed[0]) if parsed else None
    if meta is None or meta.kind != "report" or meta.uploader != user.name:
        return "photo_url: not a report photo you uploaded (POST /api/photos with kind=report first)"
    return None


def link_report_photo(app: web.Application, photo_url: str, event_id: str) -> None:
    parsed = parse_photo_url(photo_url)
    if parsed is not None:
        app[PHOTOS].link_event(parsed[0], event_id)


# -- the wall screen --------------------------------------------------------------------------------------

def shanghai_day(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


class WallStats:
    """The wall's history figures from ClickHouse (the reports' own definitions), refreshed at most every
    `ttl_s`, and a ticker of new cases and escalations kept from the live assignments."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self.history: Json = {}
        self.error: str | None = None
        self.refreshed = 0.0
        self.ticker: deque[Json] = deque(maxlen=60)

    def refresh(self, db: Any, now: datetime) -> None:
        from pipeline.reports.discovery import discovery
        from pipeline.reports.query import Filters
        from pipeline.reports.sla import closing_line

        today = shanghai_day(now)
        week = Filters(since=today - timedelta(days=7), until=today)
        days: list[Json] = [{"day": r.period.isoformat() if hasattr(r.period, "isoformat") else str(r.period),
                 "cases": r.total, "proactive": r.patrol + r.sensor,
                 "rate": (r.patrol + r.sensor) / r.total if r.total else None}
                for r in discovery(db, week, period="day")]
        total = sum(d["cases"] for d in days)
        closing = closing_line(db, Filters(since=today - timedelta(days=7), until=today + timedelta(days=1)),
                               int(now.timestamp()))
        self.history = {
            "days": days,
            "discovery_7d": sum(d["proactive"] for d in days) / total if total else None,
            "closing_7d": {"due": closing.due, "closed_on_time_of_due": closing.closed_on_time_of_due,
                           "rate": closing.closed_on_time_of_due / closing.due if closing.due else None},
        }
        self.refreshed = time.monotonic()
        self.error = None

    def observe(self, items: list[tuple[str, Json | None, float]]) -> None:
        """New cases (first dispatches) and escalations, newest last."""
        for kind, msg, _ts in items:
            if kind != "assignment" or msg is None:
                continue
            what = msg.get("kind", "dispatch")      # dispatch is a case's first round; reroute, rework follow
            if what not in ("dispatch", "escalation"):
                continue
            self.ticker.append({"kind": "new" if what == "dispatch" else "escalation",
                                "case_id": msg.get("case_id"), "category": msg.get("category"),
                                "team": msg.get("team"), "subdistrict": msg.get("subdistrict"),
                                "at": msg.get("created_at"), "reason": str(msg.get("reason") or "")[:120]})


WALL = web.AppKey("wall", WallStats)


def wall_view(centre: Any, stats: WallStats, now: datetime | None = None) -> Json:
    """Everything the wall shows; the live part from the board, the history from `stats`."""
    from pipeline.web.live import parse_time

    board = centre.board
    now = now or board.clock()
    midnight = datetime.combine(shanghai_day(now), datetime.min.time(), SHANGHAI).astimezone(UTC)
    hour_ago = now - timedelta(hours=1)
    tax = centre.taxonomy
    names = board.subdistrict_names
    today = {"cases": 0, "citizen": 0, "patrol": 0, "sensor": 0}
    recent: list[Json] = []
    for c in board.cases.values():
        created = parse_time(c.get("created_at"))
        if created is None or created < midnight or c.get("kind", "problem") != "problem":
            continue
        today["cases"] += 1
        by = str(c.get("discovered_by") or "citizen")
        if by in today:
            today[by] += 1
        if created >= hour_ago and c.get("lon") is not None:
            cat = tax.categories.get(str(c.get("category")))
            recent.append({"case_id": c.get("case_id"), "lon": c.get("lon"), "lat": c.get("lat"),
                           "category": c.get("category"), "category_name": cat.name if cat else "",
                           "created_at": c.get("created_at"), "priority": c.get("priority"),
                           "status": c.get("status")})
    rate = (today["patrol"] + today["sensor"]) / today["cases"] if today["cases"] else None
    ticker = []
    for t in sorted(stats.ticker, key=lambda t: str(t.get("at") or ""), reverse=True)[:25]:
        cat = tax.categories.get(str(t.get("category")))
        ticker.append(t | {"category_name": cat.name if cat else "",
                           "subdistrict_name": names.get(str(t.get("subdistrict") or ""), "")})
    return {"version": board.version, "now": now.isoformat(), "today": today | {"discovery_rate": rate},
            "history": stats.history, "history_error": stats.error, "queues": board.queues(),
            "recent": sorted(recent, key=lambda r: str(r["created_at"]))[-300:], "ticker": ticker}


async def wall_page(request: web.Request) -> web.Response:
    _user(request, auth.may_view_ops)
    page = request.app[PAGE]
    return page("wall.html", request, "一屏观天下 Wall screen")  # type: ignore[operator, no-any-return]


async def api_wall(request: web.Request) -> web.Response:
    _user(request, auth.may_view_ops)
    centre = request.app[CENTRE_OF]
    stats = request.app[WALL]
    if centre.archive is not None and time.monotonic() - stats.refreshed > stats.ttl_s:  # type: ignore[attr-defined]
        try:
            await centre.run_blocking(stats.refresh, centre.archive.db, datetime.now(UTC), timeout=20)  # type: ignore[attr-defined]
        except Exception as err:  # ClickHouse down or slow: the live part still shows
            stats.error = f"history unavailable: {type(err).__name__}"
            stats.refreshed = time.monotonic()
    return _json(wall_view(centre, stats))


def register(app: web.Application, centre: Any, user_of: UserOf, page: Callable[..., web.Response]) -> None:
    """Add the routes above to the application, with the photo store of the environment."""
    app[CENTRE_OF] = centre
    app[USER_OF] = user_of
    app[PAGE] = page
    max_bytes = MAX_PHOTO_BYTES
    with contextlib.suppress(ValueError):
        max_bytes = int(environ().get("CITYOPS_PHOTO_MAX_BYTES", "")) or MAX_PHOTO_BYTES
    app[PHOTOS] = Photos(store_from_env(centre.settings.var_dir), max_bytes)
    app[EVENT_CASES] = {}
    stats = WallStats()
    app[WALL] = stats
    centre.observers.append(stats.observe)
    app.add_routes([web.post("/api/photos", api_photo_upload), web.get("/photos/{name}", get_photo),
                    web.get("/wall", wall_page), web.get("/api/wall", api_wall)])
