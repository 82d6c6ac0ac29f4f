"""The aiohttp application: pages, the JSON API behind them, the live stream (SSE), health and metrics.

Routes (who may use them is decided in `pipeline.web.auth`, nowhere else):

    GET  /                      -> the page of the signed-in user's role (or the sign-in page)
    GET  /signin, POST /signin, POST /signout
    GET  /ops                   operations centre (operator, analyst)
    GET  /cases/{id}            a case: reports, dispatches with rule and reason, timeline
    GET  /feed                  team feed, phone-sized (member, patrol)
    GET  /api/me | /api/board | /api/map | /api/taxonomy | /api/feed | /api/cells/{cell} | /api/cases/{id}
    GET  /api/stream            server-sent events: `board` (ops) or `feed` (team) on every change
    POST /api/cases/{id}/actions   {action, note, update_id}  -> cityops.case-updates
    POST /api/patrol               {category, lat, lon, note} -> cityops.raw.patrol
    POST /api/unlocated/place      {event_id, lon, lat}       -> cityops.raw.hotline (same ticket id)
    POST /api/token                {name, password} -> a bearer token for apps
    /open311/v2/...             the hotline ingest API (pipeline.web.open311)
    GET  /evaluation, /bulletin, /bulletin.pdf   this month's evaluation and its bulletin (operator, analyst;
                                pipeline.web.evaluation_pages)
    GET  /healthz, GET /metrics

Every response carries a strict Content-Security-Policy (scripts and styles from this server only: the pages
work offline, with nothing from a CDN). State-changing requests made with the session cookie need the CSRF
token (see `pipeline.web.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from string import Template
from typing import Any, TypeVar

import orjson
from aiohttp import web

from pipeline.config import Settings
from pipeline.model.taxonomy import Taxonomy
from pipeline.stages.decode import MAX_DESCRIPTION, Decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.web import auth, evaluation_pages, places, street, viewcache
from pipeline.web.alerts import AlertPolicy, ConfigWatch, alerts
from pipeline.web.archive import CaseArchive
from pipeline.web.feed import BoardFeed, Item, LagProbe, LagReport, deliver_to_loop
from pipeline.web.live import LiveBoard
from pipeline.web.metrics import WebCounters, collect, render
from pipeline.web.open311 import Open311
from pipeline.web.open311_doc import error as open311_error
from pipeline.web.open311_doc import fmt_of
from pipeline.web.outbox import Outbox, case_update, patrol_report, placed_ticket
from pipeline.web.ratelimit import RateLimiter
from pipeline.web.users import User, UsersHolder

log = logging.getLogger("cityops.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
MAX_BODY = 64 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CSRF_COOKIE = "cityops_signin_csrf"
T = TypeVar("T")


@dataclass
class Centre:
    """Everything the handlers share; built by `pipeline.web.cli` (real Kafka and ClickHouse) or by tests."""

    settings: Settings
    users: UsersHolder
    signer: auth.Signer
    board: LiveBoard
    outbox: Outbox
    decoder: Decoder
    taxonomy: Taxonomy
    map_json: bytes
    archive: CaseArchive | None = None
    config: ConfigWatch | None = None
    feed: BoardFeed | None = None
    lag_probe: LagProbe | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    signin_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(rate=0.2, burst=10))
    counters: WebCounters = field(default_factory=WebCounters)
    alert_policy: AlertPolicy = field(default_factory=AlertPolicy)
    production: bool = False
    refresh_s: float = 5.0
    lag: LagReport | None = None
    notification_counts: dict[str, list[tuple[dict[str, str], float]]] | None = None   # from ClickHouse (upkeep)
    started_at: float = field(default_factory=time.time)
    # called with every batch of live items after the board took it (the Open311 search keeps recent states)
    observers: list[Callable[[list[Item]], None]] = field(default_factory=list)

    async def run_blocking(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(None, partial(fn, *args)), timeout)

    def alerts(self) -> list[dict[str, str]]:
        feed_error = self.feed.last_error if self.feed is not None else None
        return [a.to_json() for a in alerts(board=self.board, lag=self.lag, config=self.config,
                                            feed_error=feed_error, users_error=self.users.last_error,
                                            policy=self.alert_policy)]

    def apply_items(self, items: list[Item]) -> None:
        self.board.apply_batch(items)
        for observe in self.observers:
            observe(items)


CENTRE = web.AppKey("centre", Centre)
USER = web.RequestKey("user", User)
SESSION = web.RequestKey("session", auth.Session)


# -- helpers ----------------------------------------------------------------------------------------------

def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _problem(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status)


def _centre(request: web.Request) -> Centre:
    return request.app[CENTRE]


def _user(request: web.Request) -> User | None:
    return request.get(USER)


def _require(request: web.Request, allowed: Callable[[User], bool]) -> User:
    """The signed-in user when `allowed(user)`; 401 (API) or a redirect to sign-in (page), else 403."""
    user = _user(request)
    if user is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(text='{"error": "sign in first"}', content_type="application/json")
        raise web.HTTPFound(f"/signin?next={request.path}")
    if not allowed(user):
        if request.path.startswith("/api/"):
            raise web.HTTPForbidden(text='{"error": "not allowed for your role or team"}',
                                    content_type="application/json")
        raise web.HTTPForbidden(text="403: not allowed for your role or team")
    return user


def _route_group(path: str) -> str:
    for prefix in ("/open311", "/api/stream", "/api", "/static", "/metrics", "/healthz"):
        if path.startswith(prefix):
            return prefix.strip("/")
    return "pages"


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON or form body as a dict (400 when neither)."""
    if request.content_type == "application/json":
        try:
            obj = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text='{"error": "body: not valid JSON"}', content_type="application/json")\
                from None
        if not isinstance(obj, dict):
            raise web.HTTPBadRequest(text='{"error": "body: must be a JSON object"}', content_type="application/json")
        return obj
    return dict(await _form(request))


async def _form(request: web.Request) -> Any:
    """The form body; 400 (not 500) when its bytes are not valid form data (e.g. invalid UTF-8)."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length or 0,
                                            text=f'{{"error": "body: larger than {MAX_BODY} bytes"}}',
                                            content_type="application/json") from None
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text='{"error": "body: not valid form data"}',
                                 content_type="application/json") from None


# -- middlewares ------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_and_secure(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route group and status; add the security headers."""
    centre = _centre(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        centre.counters.requests[(_route_group(request.path), exc.status)] += 1
        if 400 <= exc.status < 500 and request.path.startswith("/open311/"):
            # aiohttp's own refusals (no such method or format, another HTTP method, a body over the size
            # limit) as Open311 errors, in the format the path asks for
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            reason = f"{exc.reason}: {request.method} {request.path[:200]}"
            response = open311_error(fmt_of(request), exc.status, reason, allow)
            _secure_headers(response)
            return response
        if 400 <= exc.status < 500 and exc.content_type != "application/json" and request.path.startswith("/api/"):
            # aiohttp's own refusals (e.g. a body over the size limit) answer plain text: API clients get JSON
            reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = web.json_response({"error": reason}, status=exc.status, dumps=lambda o: orjson.dumps(o).decode())
            _secure_headers(response)
            return response
        _secure_headers(exc)
        raise
    centre.counters.requests[(_route_group(request.path), response.status)] += 1
    if not response.prepared:
        _secure_headers(response)
    return response


def _secure_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the session (cookie or bearer) to a current user; enforce CSRF on cookie-authenticated writes."""
    centre = _centre(request)
    token, via_cookie = None, False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header[7:].strip()
    elif auth.COOKIE in request.cookies:
        token, via_cookie = request.cookies[auth.COOKIE], True
    if token:
        session = centre.signer.verify(token)
        user = centre.users.current.get(session.user) if session else None
        if session is not None and user is not None and user.role != "ingest":
            request[SESSION], request[USER] = session, user
    # /open311 uses API keys, /signin its own double-submit token, /api/token answers only the caller
    if (request.method not in ("GET", "HEAD", "OPTIONS") and via_cookie and SESSION in request
            and not request.path.startswith(("/open311/", "/signin", "/api/token"))):
        sent = request.headers.get("X-CSRF-Token")
        if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sent = str((await _form(request)).get("csrf_token", ""))
        if not centre.signer.check_csrf(request[SESSION], sent):
            return _problem(403, "CSRF token missing or wrong; reload the page")
    return await handler(request)


# -- pages ------------------------------------------------------------------------------------------------

def _page(name: str, request: web.Request, title: str, **values: str) -> web.Response:
    centre = _centre(request)
    user = _user(request)
    session = request.get(SESSION)
    csrf = centre.signer.csrf_token(session) if session is not None else ""
    who = ""
    if user is not None:
        team = f" · {user.team}" if user.team else (f" · {user.patrol_team}" if user.patrol_team else "")
        who = (f'<span class="who">{html.escape(user.display or user.name)} ({html.escape(user.role)}'
               f'{html.escape(team)})</span><form method="post" action="/signout" class="inline">'
               f'<input type="hidden" name="csrf_token" value="{html.escape(csrf)}">'
               f'<button type="submit">退出 Sign out</button></form>')
    body = Template((TEMPLATES / name).read_text(encoding="utf-8")).safe_substitute(
        {k: html.escape(v) for k, v in values.items()})
    layout = Template((TEMPLATES / "layout.html").read_text(encoding="utf-8"))
    text = layout.safe_substitute(title=html.escape(title), csrf=html.escape(csrf), who=who, body=body,
                                  role=html.escape(user.role if user else ""),
                                  team=html.escape((user.team or "") if user else ""),
                                  mode="production" if centre.production else "development")
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _home_for(user: User) -> str:
    return "/ops" if auth.may_view_ops(user) else "/feed"


async def home(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    raise web.HTTPFound(_home_for(user) if user else "/signin")


async def signin_page(request: web.Request, error: str = "") -> web.Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    nxt = request.query.get("next", "")
    response = _page("signin.html", request, "登录 Sign in", signin_csrf=token, error=error,
                     next=nxt if nxt.startswith("/") and not nxt.startswith("//") else "")
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/signin",
                        secure=_centre(request).production)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    centre = _centre(request)
    form = await _form(request)
    cookie_token = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf_token", "")).encode("utf-8", "replace")
    if not cookie_token or not secrets.compare_digest(cookie_token.encode("utf-8", "replace"), sent):
        return _problem(403, "CSRF token missing or wrong; reload the sign-in page")
    name = str(form.get("name", "")).strip()
    wait = centre.signin_limiter.take(f"{request.remote}|{name}")
    if wait > 0:
        response = await signin_page(request, f"尝试过多 Too many attempts; wait {wait:.0f} s")
        response.set_status(429)
        return response
    user = await centre.run_blocking(centre.users.current.authenticate, name, str(form.get("password", "")))
    if user is None:
        response = await signin_page(request, "用户名或密码错误 Wrong name or password")
        response.set_status(401)
        return response
    nxt = str(form.get("next", ""))
    target = nxt if nxt.startswith("/") and not nxt.startswith("//") else _home_for(user)
    response = web.HTTPFound(target)
    response.set_cookie(auth.COOKIE, centre.signer.issue(user), httponly=True, samesite="Strict", path="/",
                        max_age=int(centre.signer.ttl_s), secure=centre.production)
    response.del_cookie(CSRF_COOKIE, path="/signin")
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    if session is not None:
        _centre(request).signer.revoke(session)
    response = web.HTTPFound("/signin")
    response.del_cookie(auth.COOKIE, path="/")
    raise response


async def api_token(request: web.Request) -> web.Response:
    centre = _centre(request)
    body = await _body(request)
    name = str(body.get("name", ""))
    if centre.signin_limiter.take(f"{request.remote}|{name}") > 0:
        return _problem(429, "too many attempts")
    user = await centre.run_blocking(centre.users.current.authenticate, name, str(body.get("password", "")))
    if user is None:
        return _problem(401, "wrong name or password")
    return _json({"token": centre.signer.issue(user), "expires_in": int(centre.signer.ttl_s), "role": user.role,
                  "team": user.team})


async def ops_page(request: web.Request) -> web.Response:
    _require(request, auth.may_view_ops)
    return _page("ops.html", request, "城运中心 Operations centre")


async def case_page(request: web.Request) -> web.Response:
    _require(request, lambda u: True)
    return _page("case.html", request, "案件 Case", case_id=request.match_info["case_id"])


async def feed_page(request: web.Request) -> web.Response:
    _require(request, lambda u: u.role in ("member", "patrol"))
    return _page("feed.html", request, "我的任务 Team feed")


# -- JSON API ---------------------------------------------------------------------------------------------

async def api_me(request: web.Request) -> web.Response:
    user = _require(request, lambda u: True)
    return _json({"name": user.name, "role": user.role, "team": user.team, "patrol_team": user.patrol_team,
                  "display": user.display, "can_patrol": user.can_patrol,
                  "may_place": auth.may_place_tickets(user)})


def board_view(centre: Centre, user: User) -> dict[str, Any]:
    board = centre.board
    return {"version": board.version, "now": datetime.now(UTC).isoformat(), "queues": board.queues(),
            "cells": board.cells(), "hotspots": board.hotspots(), "alerts": centre.alerts(),
            "unlocated": board.unlocated_list(100) if auth.may_view_ops(user) else [],
            "unlocated_total": len(board.unlocated),
            "caught_up": centre.feed.caught_up.is_set() if centre.feed is not None else True}


def feed_view(centre: Centre, user: User) -> dict[str, Any]:
    """The team's cases, most urgent and newest first, each with the actions the user may take now."""
    board = centre.board
    if user.role == "member" and user.team:
        rows = board.cases_where(lambda c: auth.may_view_case(user, c) and (
            board.is_open(c) or c.get("status") in ("resolved", "verified") or user.team == c.get("team")), 100)
    else:
        rows = []
    rows += places.emergencies_beyond(board, user, rows)
    for row in rows:
        row["actions"] = auth.allowed_actions(user, board.cases[row["case_id"]])
    places.decorate_feed(centre, rows)
    return {"version": board.version, "team": user.team, "patrol_team": user.patrol_team, "cases": rows}


async def api_board(request: web.Request) -> web.Response:
    user = _require(request, auth.may_view_ops)
    centre = _centre(request)
    body = viewcache.of(centre.board).get(viewcache.view_key(user), lambda: board_view(centre, user), stale_ok=True)
    return web.Response(body=body, content_type="application/json")


async def api_feed(request: web.Request) -> web.Response:
    user = _require(request, lambda u: u.role in ("member", "patrol"))
    centre = _centre(request)
    body = viewcache.of(centre.board).get(viewcache.view_key(user), lambda: feed_view(centre, user), stale_ok=True)
    return web.Response(body=body, content_type="application/json")


async def api_map(request: web.Request) -> web.Response:
    _require(request, lambda u: True)
    return web.Response(body=_centre(request).map_json, content_type="application/json",
                        headers={"Cache-Control": "private, max-age=3600"})


async def api_taxonomy(request: web.Request) -> web.Response:
    _require(request, lambda u: True)
    tax = _centre(request).taxonomy
    return _json([{"code": c, "name": tax.categories[c].name, "major": tax.categories[c].major_name}
                  for c in tax.codes()])


async def api_cell(request: web.Request) -> web.Response:
    user = _require(request, lambda u: True)
    centre = _centre(request)
    cell = request.match_info["cell"]
    return _json({"cell": cell, "cases": centre.board.in_cell(cell, lambda c: auth.may_view_case(user, c))})


async def api_case(request: web.Request) -> web.Response:
    user = _require(request, lambda u: True)
    centre = _centre(request)
    case_id = request.match_info["case_id"]
    case = centre.board.cases.get(case_id)
    # the same answer for "no such case" and "not yours", so a member cannot probe other teams' case ids
    if case is None or not auth.may_view_case(user, case):
        return _problem(404, f"no case {case_id} visible to you")
    reports: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    history_error = None
    if centre.archive is not None:
        try:
            reports = await centre.run_blocking(centre.archive.reports, case_id)
            timeline = await centre.run_blocking(centre.archive.timeline, case_id)
        except Exception as err:  # ClickHouse down or slow: the live part of the page still works
            history_error = f"history unavailable: {type(err).__name__}"
    else:
        history_error = "history unavailable: no ClickHouse configured"
    if centre.archive is not None and history_error is None:
        with contextlib.suppress(Exception):   # no notifications table yet: the rest of the page still works
            notifications = await centre.run_blocking(centre.archive.notifications, case_id)
    return _json({"case": centre.board.summary(case) | {"state": case}, "reports": reports, "timeline": timeline,
                  "dispatches": centre.board.dispatches.get(case_id, []), "history_error": history_error,
                  "notifications": notifications,
                  "notify_failed": centre.board.notify_failures.get(case_id, []),
                  "actions": auth.allowed_actions(user, case)})


async def _send(centre: Centre, topic: str, key: str, raw: bytes, kind: str) -> web.Response | None:
    try:
        await asyncio.wait_for(centre.outbox.send(topic, key, raw), 20)
    except Exception as err:  # Kafka unavailable: nothing was sent; the user may retry (same update_id)
        log.warning("could not send %s: %s", kind, type(err).__name__)
        return _problem(503, f"could not send ({type(err).__name__}); try again")
    centre.counters.sent[kind] += 1
    return None


async def api_action(request: web.Request) -> web.Response:
    user = _require(request, lambda u: u.role == "member")
    centre = _centre(request)
    case_id = request.match_info["case_id"]
    body = await _body(request)
    case = centre.board.cases.get(case_id)
    if case is None or not auth.may_view_case(user, case):
        return _problem(404, f"no case {case_id} visible to you")
    action = str(body.get("action", ""))
    if action not in auth.allowed_actions(user, case):
        return _problem(409, f"cannot {action or '(no action)'} a case that is {case.get('status')} "
                             f"and assigned to {case.get('team')}")
    note = str(body.get("note") or "").strip()
    if action == "reject" and not note:
        return _problem(400, "note: a rejection needs a reason")
    if action == "resolve" and not note:
        return _problem(400, "note: say what was done")
    if len(note) > MAX_DESCRIPTION:
        return _problem(400, f"note: too long (limit {MAX_DESCRIPTION})")
    photo_url = str(body.get("photo_url") or "")
    refused = street.check_action_photo(request.app, user, case_id, case, action, photo_url)
    if refused:
        return _problem(400, refused)
    try:
        raw = case_update(centre.decoder, case_id=case_id, action=action, team=str(user.team), actor=user.name,
                          note=note, update_id=str(body["update_id"]) if body.get("update_id") else None,
                          photo_url=photo_url)
    except InvalidEvent as err:
        return _problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.case_updates, case_id, raw, "case-update")
    return failed or _json({"sent": orjson.loads(raw)}, 202)


async def api_patrol(request: web.Request) -> web.Response:
    user = _require(request, lambda u: u.can_patrol)
    centre = _centre(request)
    body = await _body(request)
    try:
        lat, lon = float(body.get("lat", "")), float(body.get("lon", ""))
    except (TypeError, ValueError):
        return _problem(400, "lat/lon: a position is required (numbers)")
    photo_url = str(body.get("photo_url") or "")
    refused = street.check_report_photo(request.app, user, photo_url) if photo_url else None
    if refused:
        return _problem(400, refused)
    try:
        rid, raw = patrol_report(centre.decoder, patrol_team=str(user.patrol_team), inspector=user.name,
                                 category=str(body.get("category", "")).strip(), lat=lat, lon=lon,
                                 note=str(body.get("note") or "").strip(), photo_url=photo_url,
                                 report_id=str(body["report_id"]) if body.get("report_id") else None)
    except InvalidEvent as err:
        return _problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.raw_patrol, rid, raw, "patrol")
    if not failed and photo_url:
        await centre.run_blocking(street.link_report_photo, request.app, photo_url, f"patrol:{rid}")
    return failed or _json({"report_id": rid}, 202)


async def api_place(request: web.Request) -> web.Response:
    _require(request, auth.may_place_tickets)
    centre = _centre(request)
    body = await _body(request)
    event_id = str(body.get("event_id", ""))
    ticket = centre.board.unlocated.get(event_id)
    if ticket is None:
        return _problem(404, f"{event_id or '(no event_id)'} is not in the unlocated queue")
    try:
        lon, lat = float(body["lon"]), float(body["lat"])
    except (KeyError, TypeError, ValueError):
        return _problem(400, "lon/lat: a position is required (numbers)")
    if centre.config is not None and centre.config.grid is not None:
        where = centre.config.grid.current.locate(lon, lat)
        if where.error or not where.cell:
            return _problem(400, f"position {lon:.5f}, {lat:.5f} is outside the grid: choose a point in a cell")
    try:
        key, raw = placed_ticket(centre.decoder, ticket, lon, lat)
    except InvalidEvent as err:
        return _problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.raw_hotline, key, raw, "placed-ticket")
    if failed:
        return failed
    centre.board.apply_batch([("placed", {"event_id": event_id}, time.time())])
    return _json({"placed": event_id, "lon": lon, "lat": lat}, 202)


async def api_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the user's view (`board` or `feed`) now and after every change (coalesced over
    0.25 s), and at least every 15 s (due-soon and overdue change with the clock alone)."""
    user = _require(request, lambda u: True)
    centre = _centre(request)
    view = board_view if auth.may_view_ops(user) else feed_view
    event_name = "board" if auth.may_view_ops(user) else "feed"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    _secure_headers(response)
    await response.prepare(request)
    changed = asyncio.Event()
    unsubscribe = centre.board.subscribe(lambda version: changed.set())
    centre.counters.sse_clients += 1
    last: bytes | None = None
    try:
        while True:
            payload = viewcache.of(centre.board).get(viewcache.view_key(user), lambda: view(centre, user))
            if payload != last:         # a change elsewhere on the board need not resend an unchanged view
                await response.write(b"event: " + event_name.encode() + b"\ndata: " + payload + b"\n\n")
                last = payload
            else:
                await response.write(b": unchanged\n\n")      # a comment keeps the connection alive
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 15.0)
            await asyncio.sleep(0.25)
            changed.clear()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        unsubscribe()
        centre.counters.sse_clients -= 1
    return response


# -- health and metrics -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    """200 when the live view is current (caught up with Kafka, no feed error); 503 otherwise, with why."""
    centre = _centre(request)
    feed = centre.feed
    checks = {
        "live_feed": "ok" if feed is None or (feed.caught_up.is_set() and not feed.last_error)
        else (feed.last_error or "catching up"),
        "ruleset": "ok" if centre.config is None or not centre.config.rules_error else "refused",
        "grid": "ok" if centre.config is None or not centre.config.grid_error else "refused",
        "lag": "unknown" if centre.lag is None else (centre.lag.error or f"{centre.lag.total_lag} messages"),
    }
    healthy = checks["live_feed"] == "ok"
    return _json({"status": "ok" if healthy else "degraded", "checks": checks, "cases": len(centre.board.cases),
                  "uptime_s": round(time.time() - centre.started_at)}, 200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    centre = _centre(request)
    records = centre.feed.records if centre.feed is not None else 0
    text = render(collect(centre.board, centre.lag, centre.counters, records, centre.notification_counts))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


# -- background upkeep ------------------------------------------------------------------------------------

async def upkeep(centre: Centre) -> None:
    """Every few seconds: re-read users, rules and grid files; measure lag; drop placed tickets."""
    pruned_unlocated = False
    while True:
        try:
            centre.users.maybe_reload()
            if centre.config is not None:
                await centre.run_blocking(centre.config.check, timeout=60)
            if centre.lag_probe is not None:
                centre.lag = await centre.run_blocking(centre.lag_probe.measure, timeout=30)
            if centre.archive is not None:
                with contextlib.suppress(Exception):     # no table yet, or ClickHouse down: no counts this round
                    centre.notification_counts = await centre.run_blocking(centre.archive.notification_counts)
            if (not pruned_unlocated and centre.archive is not None and centre.board.unlocated
                    and (centre.feed is None or centre.feed.caught_up.is_set())):
                placed = await centre.run_blocking(centre.archive.known_events, list(centre.board.unlocated))
                centre.board.apply_batch([("placed", {"event_id": e}, time.time()) for e in placed])
                pruned_unlocated = True
        except Exception as err:  # one failed round must not stop the upkeep; the alerts show the symptoms
            log.warning("upkeep: %s: %s", type(err).__name__, err)
        await asyncio.sleep(centre.refresh_s)


def build_app(centre: Centre, *, start_background: bool = True) -> web.Application:
    """The application; with `start_background`, the feed thread and the upkeep task run with it."""
    app = web.Application(middlewares=[count_and_secure, authenticate], client_max_size=MAX_BODY)
    app[CENTRE] = centre
    open311 = Open311(centre)
    app.add_routes([
        web.get("/", home), web.get("/signin", signin_page), web.post("/signin", signin),
        web.post("/signout", signout), web.get("/ops", ops_page), web.get("/cases/{case_id}", case_page),
        web.get("/feed", feed_page),
        web.get("/api/me", api_me), web.get("/api/board", api_board), web.get("/api/feed", api_feed),
        web.get("/api/map", api_map), web.get("/api/taxonomy", api_taxonomy),
        web.get("/api/cells/{cell}", api_cell), web.get("/api/cases/{case_id}", api_case),
        web.post("/api/cases/{case_id}/actions", api_action), web.post("/api/patrol", api_patrol),
        web.post("/api/unlocated/place", api_place), web.post("/api/token", api_token),
        web.get("/api/stream", api_stream), web.get("/healthz", healthz), web.get("/metrics", metrics),
        *open311.routes(),
        *evaluation_pages.routes(evaluation_pages.Access(_centre, _require)),
        web.static("/static", STATIC, append_version=False),
    ])
    street.register(app, centre, _user, _page)     # photos, the wall screen (pipeline.web.street)

    async def on_startup(app: web.Application) -> None:
        if not start_background:
            return
        if centre.feed is not None:
            centre.feed.deliver = deliver_to_loop(asyncio.get_running_loop(), centre.apply_items)
            centre.feed.start()
        app["upkeep"] = asyncio.create_task(upkeep(centre))

    async def on_cleanup(app: web.Application) -> None:
        task = app.get("upkeep")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if centre.feed is not None:
            await asyncio.get_running_loop().run_in_executor(None, centre.feed.stop)
        close = getattr(centre.outbox, "close", None)
        if close is not None:
            close()
        if centre.lag_probe is not None:
            centre.lag_probe.close()

    async def compress_map(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/api/map" and isinstance(response, web.Response):
            response.enable_compression()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.on_response_prepare.append(compress_map)
    return app
