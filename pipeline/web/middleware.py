"""The application's middlewares: counting and security headers on every response, and authentication
(a session cookie or a bearer token; the CSRF check of state-changing requests: pipeline.web.auth)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from pipeline.web import auth
from pipeline.web.centre import CSP, SESSION, USER, centre_of, problem, read_form, route_group
from pipeline.web.open311_doc import error as open311_error
from pipeline.web.open311_doc import fmt_of

# -- middlewares ------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_and_secure(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route group and status; add the security headers."""
    centre = centre_of(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        centre.counters.requests[(route_group(request.path), exc.status)] += 1
        if 400 <= exc.status < 500 and request.path.startswith("/open311/"):
            # aiohttp's own refusals (no such method or format, another HTTP method, a body over the size
            # limit) as Open311 errors, in the format the path asks for
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            reason = f"{exc.reason}: {request.method} {request.path[:200]}"
            response = open311_error(fmt_of(request), exc.status, reason, allow)
            secure_headers(response)
            return response
        if 400 <= exc.status < 500 and exc.content_type != "application/json" and request.path.startswith("/api/"):
            # aiohttp's own refusals (e.g. a body over the size limit) answer plain text: API clients get JSON
            reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = web.json_response({"error": reason}, status=exc.status, dumps=lambda o: orjson.dumps(o).decode())
            secure_headers(response)
            return response
        secure_headers(exc)
        raise
    centre.counters.requests[(route_group(request.path), response.status)] += 1
    if not response.prepared:
        secure_headers(response)
    return response


def secure_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the session (cookie or bearer) to a current user; enforce CSRF on cookie-authenticated writes."""
    centre = centre_of(request)
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
            sent = str((await read_form(request)).get("csrf_token", ""))
        if not centre.signer.check_csrf(request[SESSION], sent):
            return problem(403, "CSRF token missing or wrong; reload the page")
    return await handler(request)
