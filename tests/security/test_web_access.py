"""Issue #10.7 (web): every route refuses the unauthenticated and every action refuses the wrong team.

The routes are read from the application's own router, so a route added later is covered too: it must refuse an
anonymous request unless it is on the short public list below (sign-in, health, the Open311 reads).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pipeline.web import auth
from pipeline.web.app import build_app
from pipeline.web.live import LiveBoard
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.users import User
from tests.web.helpers import API_KEY, case_state, centre, run, sign_in

Client = TestClient[Any, Any]

PUBLIC = {
    ("GET", "/"), ("GET", "/signin"), ("POST", "/signin"), ("POST", "/signout"), ("POST", "/api/token"),
    ("GET", "/healthz"), ("GET", "/metrics"),
    # Open311 GeoReport v2 (both formats): services, requests, tokens and discovery are public by the standard;
    # POST needs an api_key
    *{("GET", f"/open311/v2/{path}.{fmt}") for fmt in ("json", "xml")
      for path in ("services", "services/{code}", "requests", "requests/{id}", "tokens/{token}")},
    ("GET", "/open311/discovery.json"), ("GET", "/open311/discovery.xml"),
}
PARAMS = {"case_id": "C-hand", "cell": "310109003001001", "code": "E0501", "id": "T1", "token": "T1",
          "name": "0123456789abcdef01234567.jpg"}


def board() -> LiveBoard:
    b = LiveBoard()
    b.apply_batch([("case-state", case_state("C-hand", team="handling"), 0.0),
                   ("case-state", case_state("C-enf", team="enforcement"), 0.0),
                   ("case-state", case_state("C-sup", team="supervision"), 0.0),
                   ("case-state", case_state("C-done", team="handling", status="resolved"), 0.0),
                   ("unlocated", {"event_id": "hotline:U1", "category": "E0501", "occurred_at": 1.79e9,
                                  "description": "路口", "address": "不存在的路"}, 0.0)])
    return b


def routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, static files aside."""
    app = build_app(centre(board()), start_background=False)
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template is None or route.method == "HEAD":
            continue
        out.append((route.method, str(template)))
    return sorted(set(out))


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)


PROTECTED = [r for r in routes() if r not in PUBLIC]


def test_the_route_list_is_complete() -> None:
    """The enumeration sees the routes the module docstring of pipeline.web.app names (so none is skipped)."""
    names = {t for _, t in routes()}
    for expected in ("/api/board", "/api/cases/{case_id}/actions", "/api/patrol", "/api/unlocated/place",
                     "/api/stream", "/open311/v2/requests.json", "/ops", "/feed"):
        assert expected in names
    assert len(PROTECTED) >= 14


def refused(status: int, location: str = "") -> bool:
    return status in (401, 403) or (status in (302, 303) and location.startswith("/signin"))


@pytest.mark.parametrize(("method", "template"), PROTECTED)
@pytest.mark.parametrize("credential", ["none", "garbage", "forged", "expired", "removed_user", "ingest_user"])
def test_every_protected_route_refuses_without_a_valid_session(method: str, template: str, credential: str) -> None:
    """No session, a garbage or forged token, an expired one, a removed user's, an ingest client's: refused,
    and nothing reaches Kafka."""
    c = centre(board())
    headers = {}
    if credential == "garbage":
        headers["Authorization"] = "Bearer not.a-token"
    elif credential == "forged":      # signed with the development secret the server does not use
        headers["Authorization"] = "Bearer " + auth.Signer(auth.DEV_SECRET.encode()).issue(
            User("ops", "operator", password_hash="x"))
    elif credential == "expired":
        headers["Authorization"] = "Bearer " + c.signer.issue(User("ops", "operator"), now=0.0)
    elif credential == "removed_user":
        headers["Authorization"] = "Bearer " + c.signer.issue(User("ghost", "operator"))
    elif credential == "ingest_user":
        headers["Authorization"] = "Bearer " + c.signer.issue(c.users.current.by_api_key(API_KEY))  # type: ignore[arg-type]

    async def body(client: Client) -> None:
        path = concrete(template)
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if method == "POST":
            kwargs["json"] = {"action": "accept", "category": "E0501", "lat": 31.26, "lon": 121.49,
                              "event_id": "hotline:U1", "service_code": "E0501", "note": "x"}
        if template == "/api/stream":
            resp = await client.get(path, **kwargs)
        else:
            resp = await client.request(method, path, **kwargs)
        assert refused(resp.status, resp.headers.get("Location", "")), (method, path, resp.status)
        text = await resp.text()
        assert "C-hand" not in text.replace(path, "") and "C-enf" not in text
        assert isinstance(c.outbox, MemoryOutbox) and c.outbox.sent == []
    run(c, body)


def test_open311_post_needs_a_valid_api_key() -> None:
    c = centre(board())
    ticket = {"service_code": "E0501", "lat": 31.265, "long": 121.49, "description": "路口摆摊"}

    async def body(client: Client) -> None:
        assert (await client.post("/open311/v2/requests.json", json=ticket)).status == 401
        wrong = await client.post("/open311/v2/requests.json", json={**ticket, "api_key": "guess-" + API_KEY})
        assert wrong.status == 403
        # a signed-in operator's session is no api key
        await sign_in(client, "ops")
        assert (await client.post("/open311/v2/requests.json", json=ticket)).status == 401
        assert isinstance(c.outbox, MemoryOutbox) and c.outbox.sent == []
    run(c, body)


# who -> (may view ops, may use the team feed, cases visible, may place tickets, may file patrol reports)
ROLES = {
    "ops": (True, False, {"C-hand", "C-enf", "C-sup", "C-done"}, True, False),
    "analyst": (True, False, {"C-hand", "C-enf", "C-sup", "C-done"}, False, False),
    "enf": (False, True, {"C-enf"}, False, False),
    "hand": (False, True, {"C-hand", "C-done"}, False, True),
    "sup": (False, True, {"C-sup", "C-done"}, False, False),
    "walker": (False, True, set(), False, True),
}


@pytest.mark.parametrize("who", sorted(ROLES))
def test_each_role_and_team_sees_and_does_only_its_own(who: str) -> None:
    """Pages, case reads, cell lists, the feed, placing and patrol reports follow the role and the team."""
    ops, feed, visible, place, patrol = ROLES[who]
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, who)
        h = {"X-CSRF-Token": csrf}
        assert ((await client.get("/api/board")).status == 200) == ops
        assert ((await client.get("/ops", allow_redirects=False)).status == 200) == ops
        assert ((await client.get("/api/feed")).status == 200) == feed
        assert ((await client.get("/feed", allow_redirects=False)).status == 200) == feed
        for cid in ("C-hand", "C-enf", "C-sup", "C-done"):
            status = (await client.get(f"/api/cases/{cid}")).status
            assert status == (200 if cid in visible else 404), (who, cid, status)
        cell = await (await client.get("/api/cells/310109003001001")).json()
        assert {x["case_id"] for x in cell["cases"]} == visible
        placed = await client.post("/api/unlocated/place", json={"event_id": "hotline:U1", "lon": 121.49,
                                                                 "lat": 31.265}, headers=h)
        assert (placed.status == 202) == place, placed.status
        report = await client.post("/api/patrol", json={"category": "E0501", "lat": 31.265, "lon": 121.49},
                                   headers=h)
        assert (report.status == 202) == patrol, report.status
    run(c, body)


ACTIONS = ("accept", "resolve", "reject", "verify", "reopen")


@pytest.mark.parametrize("who", sorted(ROLES))
def test_no_one_acts_on_a_case_outside_their_team_or_its_lifecycle(who: str) -> None:
    """Every action on every case: sent to Kafka only when the user's team may take it now (auth's rules,
    checked against the independent table below); every other attempt is refused and sends nothing."""
    allowed = {("hand", "C-hand", "accept"), ("hand", "C-hand", "resolve"), ("hand", "C-hand", "reject"),
               ("enf", "C-enf", "accept"), ("enf", "C-enf", "resolve"), ("enf", "C-enf", "reject"),
               ("sup", "C-sup", "accept"), ("sup", "C-sup", "resolve"), ("sup", "C-sup", "reject"),
               ("sup", "C-done", "verify"), ("sup", "C-done", "reopen")}
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, who)
        for cid in ("C-hand", "C-enf", "C-sup", "C-done"):
            for action in ACTIONS:
                before = len(c.outbox.sent)  # type: ignore[attr-defined]
                resp = await client.post(f"/api/cases/{cid}/actions", json={"action": action, "note": "done"},
                                         headers={"X-CSRF-Token": csrf})
                ok = (who, cid, action) in allowed
                assert (resp.status == 202) == ok, (who, cid, action, resp.status)
                assert len(c.outbox.sent) == before + ok  # type: ignore[attr-defined]
                if not ok:
                    assert 400 <= resp.status < 500
    run(c, body)


@pytest.mark.parametrize(("path", "payload"), [
    ("/api/cases/C-hand/actions", {"action": "accept"}),
    ("/api/patrol", {"category": "E0501", "lat": 31.265, "lon": 121.49}),
    ("/signout", {}),
])
def test_cookie_sessions_cannot_write_without_the_csrf_token(path: str, payload: dict[str, Any]) -> None:
    """A cross-site form post carries the cookie but not the token: refused (403), nothing sent."""
    c = centre(board())

    async def body(client: Client) -> None:
        await sign_in(client, "hand")
        for headers in ({}, {"X-CSRF-Token": "x"}, {"X-CSRF-Token": ""}):
            resp = await client.post(path, json=payload, headers=headers, allow_redirects=False)
            assert resp.status == 403, (path, headers, resp.status)
        assert c.outbox.sent == []  # type: ignore[attr-defined]
        me = await client.get("/api/me")
        assert me.status == 200            # the refused sign-out did not end the session
    run(c, body)


def test_a_removed_user_loses_access_at_once() -> None:
    """The role is read from the users file on every request, not trusted from the token."""
    c = centre(board())

    async def body(client: Client) -> None:
        await sign_in(client, "hand")
        assert (await client.get("/api/feed")).status == 200
        users = c.users.current
        c.users.current = type(users)({k: v for k, v in users.users.items() if k != "hand"}, "x")  # type: ignore[misc]
        assert (await client.get("/api/feed")).status == 401
    run(c, body)


def test_security_headers_on_every_answer() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        for path in ("/signin", "/api/board", "/healthz", "/nonexistent", "/open311/v2/services.json"):
            resp = await client.get(path, allow_redirects=False)
            assert "default-src 'self'" in resp.headers.get("Content-Security-Policy", ""), path
            assert resp.headers.get("X-Frame-Options") == "DENY", path
    run(c, body)

