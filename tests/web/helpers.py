"""Builders for web tests: a Centre with in-memory Kafka, known users, and case states shaped like the worker's.
For the tests against the real stack (browser, live Open311): a web server of the test's own beside a worker,
its health check, Debian's Chromium (found, launched) and signing in on the sign-in page."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import ROOT, Settings
from pipeline.model.taxonomy import default_taxonomy
from pipeline.stages.decode import default_decoder
from pipeline.web import auth
from pipeline.web.app import build_app
from pipeline.web.centre import Centre
from pipeline.web.live import LiveBoard
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.users import User, Users, api_key_digest, hash_password
from tests.support import running_worker, stop_process, wait_for

PASSWORD = "correct horse battery"
API_KEY = "test-ingest-key-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


@lru_cache(maxsize=1)
def password_hash() -> str:
    return hash_password(PASSWORD)


def users() -> Users:
    h = password_hash()
    entries = [User("ops", "operator", password_hash=h), User("analyst", "analyst", password_hash=h),
               User("enf", "member", team="enforcement", password_hash=h),
               User("hand", "member", team="handling", patrol_team="patrol-ouyang", password_hash=h),
               User("sup", "member", team="supervision", password_hash=h),
               User("walker", "patrol", patrol_team="patrol-ouyang", password_hash=h),
               User("gateway", "ingest", api_key_sha256=api_key_digest(API_KEY))]
    return Users({u.name: u for u in entries}, "test-users.yaml")


class StaticUsers:
    """A UsersHolder stand-in that never reloads."""

    def __init__(self, current: Users) -> None:
        self.current = current
        self.last_error: str | None = None

    def maybe_reload(self) -> bool:
        return False


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def case_state(case_id: str, *, team: str = "handling", status: str = "dispatched", cell: str = "310109003001001",
               due_in: timedelta = timedelta(hours=10), created_ago: timedelta = timedelta(hours=1),
               priority: int = 3, category: str = "E0501", revision: int = 2, discovered_by: str = "citizen",
               reopened: int = 0, **extra: Any) -> dict[str, Any]:
    state = {"case_id": case_id, "category": category, "discovered_by": discovered_by, "cell": cell,
             "subdistrict": cell[:9], "grid_kind": "street", "lon": 121.49, "lat": 31.265, "team": team,
             "status": status, "priority": priority, "created_at": iso(NOW - created_ago),
             "due_at": iso(NOW + due_in), "resolved_at": None, "closed_at": None, "reports": 1,
             "sources": ["hotline"], "reopened": reopened, "escalated": False, "rule_id": "vendors",
             "reason": "street vendors go to enforcement", "ruleset_version": "v1", "grid_version": "g1",
             "revision": revision}
    state.update(extra)
    return state


def centre(board: LiveBoard | None = None, **kw: Any) -> Centre:
    return Centre(settings=Settings(), users=StaticUsers(users()),  # type: ignore[arg-type]
                  signer=auth.Signer(b"test-secret"), board=board or LiveBoard(),
                  outbox=MemoryOutbox(), decoder=default_decoder(), taxonomy=default_taxonomy(),
                  map_json=orjson.dumps({"bbox": [0, 0, 1, 1], "districts": [], "subdistricts": [], "cells": []}),
                  **kw)


def run(c: Centre, body: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    """Run `body(client)` against the app of `c` on a local test server (no Kafka, no ClickHouse)."""
    async def main() -> None:
        async with TestClient(TestServer(build_app(c, start_background=False))) as client:
            await body(client)
    asyncio.run(main())


async def sign_in(client: TestClient[Any, Any], name: str, password: str = PASSWORD) -> str:
    """Sign in through the form (with its CSRF cookie); return the page's CSRF token for later posts."""
    page = await client.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    resp = await client.post("/signin", data={"name": name, "password": password, "csrf_token": token.group(1)},
                             allow_redirects=False)
    assert resp.status == 302, await resp.text()
    home = await client.get(resp.headers["Location"])
    meta = re.search(r'name="csrf-token" content="([^"]*)"', await home.text())
    assert meta is not None
    return meta.group(1)


# -- against the real stack ---------------------------------------------------------------------------------

CHROMIUM = os.environ.get("CITYOPS_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def serving_web(settings: Settings, tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """A worker and `cityops web` on a free port, over `settings` with `env` added (users file, secret, ...);
    yields the base URL once /healthz answers (logs: worker.log and web.log in `tmp_path`)."""
    port = free_port()
    full_env = {**os.environ, **settings.to_env(), **env}
    with running_worker(settings, tmp_path / "worker.log"):
        log = (tmp_path / "web.log").open("ab")
        web = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "web", "--port", str(port)], cwd=ROOT,
                               env=full_env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            assert wait_for(lambda: healthy(base), 90), (tmp_path / "web.log").read_text()[-3000:]
            yield base
        finally:
            stop_process(web)
            log.close()


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")


def launch_chromium(pw: Any) -> Any:
    """Headless Chromium through playwright's driver (`pw`: a sync_playwright() session)."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


def browser_sign_in(page: Any, base: str, name: str, password: str) -> None:
    """Sign in on the sign-in page in a browser `page` (playwright)."""
    page.goto(base + "/signin")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#signin")
    page.wait_for_load_state("networkidle")
