"""The JSON API behind the pages: the board, the feed, the map, a case, a team's actions, a patrol's report,
placing an unlocated ticket, and the live stream (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.stages.decode import MAX_DESCRIPTION
from pipeline.stages.fields import InvalidEvent
from pipeline.web import auth, places, street, viewcache
from pipeline.web.centre import Centre, centre_of, json_answer, problem, read_body, require
from pipeline.web.middleware import secure_headers
from pipeline.web.outbox import case_update, patrol_report, placed_ticket
from pipeline.web.users import User

log = logging.getLogger("cityops.web")

# -- JSON API ---------------------------------------------------------------------------------------------

async def api_me(request: web.Request) -> web.Response:
    user = require(request, lambda u: True)
    return json_answer({"name": user.name, "role": user.role, "team": user.team, "patrol_team": user.patrol_team,
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
    if user.can_patrol:     # public reports waiting for a patrol's check before filing (核实)
        rows += board.cases_where(lambda c: c.get("status") == "checking", 100)
    rows += places.emergencies_beyond(board, user, rows)
    for row in rows:
        row["actions"] = auth.allowed_actions(user, board.cases[row["case_id"]])
    places.decorate_feed(centre, rows)
    return {"version": board.version, "team": user.team, "patrol_team": user.patrol_team, "cases": rows}


async def api_board(request: web.Request) -> web.Response:
    user = require(request, auth.may_view_ops)
    centre = centre_of(request)
    body = viewcache.of(centre.board).get(viewcache.view_key(user), lambda: board_view(centre, user), stale_ok=True)
    return web.Response(body=body, content_type="application/json")


async def api_feed(request: web.Request) -> web.Response:
    user = require(request, lambda u: u.role in ("member", "patrol"))
    centre = centre_of(request)
    body = viewcache.of(centre.board).get(viewcache.view_key(user), lambda: feed_view(centre, user), stale_ok=True)
    return web.Response(body=body, content_type="application/json")


async def api_map(request: web.Request) -> web.Response:
    require(request, lambda u: True)
    return web.Response(body=centre_of(request).map_json, content_type="application/json",
                        headers={"Cache-Control": "private, max-age=3600"})


async def api_taxonomy(request: web.Request) -> web.Response:
    require(request, lambda u: True)
    tax = centre_of(request).taxonomy
    return json_answer([{"code": c, "name": tax.categories[c].name, "major": tax.categories[c].major_name}
                  for c in tax.codes()])


async def api_cell(request: web.Request) -> web.Response:
    user = require(request, lambda u: True)
    centre = centre_of(request)
    cell = request.match_info["cell"]
    return json_answer({"cell": cell, "cases": centre.board.in_cell(cell, lambda c: auth.may_view_case(user, c))})


async def api_case(request: web.Request) -> web.Response:
    user = require(request, lambda u: True)
    centre = centre_of(request)
    case_id = request.match_info["case_id"]
    case = centre.board.cases.get(case_id)
    # the same answer for "no such case" and "not yours", so a member cannot probe other teams' case ids
    if case is None or not auth.may_view_case(user, case):
        return problem(404, f"no case {case_id} visible to you")
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
    return json_answer({"case": centre.board.summary(case) | {"state": case}, "reports": reports, "timeline": timeline,
                  "dispatches": centre.board.dispatches.get(case_id, []), "history_error": history_error,
                  "notifications": notifications,
                  "notify_failed": centre.board.notify_failures.get(case_id, []),
                  "actions": auth.allowed_actions(user, case)})


async def _send(centre: Centre, topic: str, key: str, raw: bytes, kind: str) -> web.Response | None:
    try:
        await asyncio.wait_for(centre.outbox.send(topic, key, raw), 20)
    except Exception as err:  # Kafka unavailable: nothing was sent; the user may retry (same update_id)
        log.warning("could not send %s: %s", kind, type(err).__name__)
        return problem(503, f"could not send ({type(err).__name__}); try again")
    centre.counters.sent[kind] += 1
    return None


async def api_action(request: web.Request) -> web.Response:
    user = require(request, lambda u: u.role == "member" or u.can_patrol)
    centre = centre_of(request)
    case_id = request.match_info["case_id"]
    body = await read_body(request)
    case = centre.board.cases.get(case_id)
    if user.role != "member" and (case is None or case.get("status") != "checking"):
        return problem(403, "a patrol answers only checks before filing (核实)")
    if case is None or not auth.may_view_case(user, case):
        return problem(404, f"no case {case_id} visible to you")
    action = str(body.get("action", ""))
    if action not in auth.allowed_actions(user, case):
        return problem(409, f"cannot {action or '(no action)'} a case that is {case.get('status')} "
                             f"and assigned to {case.get('team')}")
    note = str(body.get("note") or "").strip()
    if action == "reject" and not note:
        return problem(400, "note: a rejection needs a reason")
    if action == "resolve" and not note:
        return problem(400, "note: say what was done")
    if action == "void" and not note:
        return problem(400, "note: say why it is not a problem")
    if len(note) > MAX_DESCRIPTION:
        return problem(400, f"note: too long (limit {MAX_DESCRIPTION})")
    photo_url = str(body.get("photo_url") or "")
    refused = street.check_action_photo(request.app, user, case_id, case, action, photo_url)
    if refused:
        return problem(400, refused)
    try:
        team = "patrol" if action in ("confirm", "void") else str(user.team)   # a check's answer is the patrol's
        raw = case_update(centre.decoder, case_id=case_id, action=action, team=team, actor=user.name,
                          note=note, update_id=str(body["update_id"]) if body.get("update_id") else None,
                          photo_url=photo_url)
    except InvalidEvent as err:
        return problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.case_updates, case_id, raw, "case-update")
    return failed or json_answer({"sent": orjson.loads(raw)}, 202)


async def api_patrol(request: web.Request) -> web.Response:
    user = require(request, lambda u: u.can_patrol)
    centre = centre_of(request)
    body = await read_body(request)
    try:
        lat, lon = float(body.get("lat", "")), float(body.get("lon", ""))
    except (TypeError, ValueError):
        return problem(400, "lat/lon: a position is required (numbers)")
    photo_url = str(body.get("photo_url") or "")
    refused = street.check_report_photo(request.app, user, photo_url) if photo_url else None
    if refused:
        return problem(400, refused)
    try:
        rid, raw = patrol_report(centre.decoder, patrol_team=str(user.patrol_team), inspector=user.name,
                                 category=str(body.get("category", "")).strip(), lat=lat, lon=lon,
                                 note=str(body.get("note") or "").strip(), photo_url=photo_url,
                                 report_id=str(body["report_id"]) if body.get("report_id") else None)
    except InvalidEvent as err:
        return problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.raw_patrol, rid, raw, "patrol")
    if not failed and photo_url:
        await centre.run_blocking(street.link_report_photo, request.app, photo_url, f"patrol:{rid}")
    return failed or json_answer({"report_id": rid}, 202)


async def api_place(request: web.Request) -> web.Response:
    require(request, auth.may_place_tickets)
    centre = centre_of(request)
    body = await read_body(request)
    event_id = str(body.get("event_id", ""))
    ticket = centre.board.unlocated.get(event_id)
    if ticket is None:
        return problem(404, f"{event_id or '(no event_id)'} is not in the unlocated queue")
    try:
        lon, lat = float(body["lon"]), float(body["lat"])
    except (KeyError, TypeError, ValueError):
        return problem(400, "lon/lat: a position is required (numbers)")
    if centre.config is not None and centre.config.grid is not None:
        where = centre.config.grid.current.locate(lon, lat)
        if where.error or not where.cell:
            return problem(400, f"position {lon:.5f}, {lat:.5f} is outside the grid: choose a point in a cell")
    try:
        key, raw = placed_ticket(centre.decoder, ticket, lon, lat)
    except InvalidEvent as err:
        return problem(400, err.reason)
    failed = await _send(centre, centre.settings.topics.raw_hotline, key, raw, "placed-ticket")
    if failed:
        return failed
    centre.board.apply_batch([("placed", {"event_id": event_id}, time.time())])
    return json_answer({"placed": event_id, "lon": lon, "lat": lat}, 202)


async def api_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the user's view (`board` or `feed`) now and after every change (coalesced over
    0.25 s), and at least every 15 s (due-soon and overdue change with the clock alone)."""
    user = require(request, lambda u: True)
    centre = centre_of(request)
    view = board_view if auth.may_view_ops(user) else feed_view
    event_name = "board" if auth.may_view_ops(user) else "feed"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    secure_headers(response)
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
