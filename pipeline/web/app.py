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
import logging
import time

from aiohttp import web

from pipeline.web import evaluation_pages, street
from pipeline.web.api import (
    api_action,
    api_board,
    api_case,
    api_cell,
    api_feed,
    api_map,
    api_me,
    api_patrol,
    api_place,
    api_stream,
    api_taxonomy,
)
from pipeline.web.centre import CENTRE, MAX_BODY, STATIC, Centre, centre_of, json_answer, require, user_of
from pipeline.web.feed import deliver_to_loop
from pipeline.web.metrics import collect, render
from pipeline.web.middleware import authenticate, count_and_secure
from pipeline.web.open311 import Open311
from pipeline.web.pages import (
    api_token,
    case_page,
    feed_page,
    home,
    ops_page,
    render_page,
    signin,
    signin_page,
    signout,
)

log = logging.getLogger("cityops.web")


# -- health and metrics -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    """200 when the live view is current (caught up with Kafka, no feed error); 503 otherwise, with why."""
    centre = centre_of(request)
    feed = centre.feed
    checks = {
        "live_feed": "ok" if feed is None or (feed.caught_up.is_set() and not feed.last_error)
        else (feed.last_error or "catching up"),
        "ruleset": "ok" if centre.config is None or not centre.config.rules_error else "refused",
        "grid": "ok" if centre.config is None or not centre.config.grid_error else "refused",
        "lag": "unknown" if centre.lag is None else (centre.lag.error or f"{centre.lag.total_lag} messages"),
    }
    healthy = checks["live_feed"] == "ok"
    return json_answer({"status": "ok" if healthy else "degraded", "checks": checks, "cases": len(centre.board.cases),
                  "uptime_s": round(time.time() - centre.started_at)}, 200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    centre = centre_of(request)
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
        *evaluation_pages.routes(evaluation_pages.Access(centre_of, require)),
        web.static("/static", STATIC, append_version=False),
    ])
    street.register(app, centre, user_of, render_page)     # photos, the wall screen (pipeline.web.street)

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
