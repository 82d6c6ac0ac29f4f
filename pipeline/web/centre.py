"""What every handler of the web application shares: the `Centre` (the process's state: board, feeds,
archive, outbox, users), the request keys, and the helpers that read a request and answer it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from pipeline.config import Settings
from pipeline.model.taxonomy import Taxonomy
from pipeline.stages.decode import Decoder
from pipeline.web import auth
from pipeline.web.alerts import AlertPolicy, ConfigWatch, alerts
from pipeline.web.archive import CaseArchive
from pipeline.web.feed import BoardFeed, Item, LagProbe, LagReport
from pipeline.web.live import LiveBoard
from pipeline.web.metrics import WebCounters
from pipeline.web.outbox import Outbox
from pipeline.web.ratelimit import RateLimiter
from pipeline.web.users import User, UsersHolder

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

def json_answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def problem(status: int, reason: str) -> web.Response:
    return json_answer({"error": reason}, status)


def centre_of(request: web.Request) -> Centre:
    return request.app[CENTRE]


def user_of(request: web.Request) -> User | None:
    return request.get(USER)


def require(request: web.Request, allowed: Callable[[User], bool]) -> User:
    """The signed-in user when `allowed(user)`; 401 (API) or a redirect to sign-in (page), else 403."""
    user = user_of(request)
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


def route_group(path: str) -> str:
    for prefix in ("/open311", "/api/stream", "/api", "/static", "/metrics", "/healthz"):
        if path.startswith(prefix):
            return prefix.strip("/")
    return "pages"


async def read_body(request: web.Request) -> dict[str, Any]:
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
    return dict(await read_form(request))


async def read_form(request: web.Request) -> Any:
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
