"""The web app: sign-in, CSRF, what each role and team may see and do, and what reaches Kafka."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from pipeline.stages.decode import default_decoder
from pipeline.web.centre import Centre
from pipeline.web.live import LiveBoard
from pipeline.web.outbox import MemoryOutbox
from tests.web.helpers import PASSWORD, case_state, centre, run, sign_in

Client = TestClient[Any, Any]


def board() -> LiveBoard:
    b = LiveBoard()
    b.apply_batch([("case-state", case_state("C-hand", team="handling"), 0.0),
                   ("case-state", case_state("C-enf", team="enforcement"), 0.0),
                   ("case-state", case_state("C-done", team="handling", status="resolved"), 0.0),
                   ("unlocated", {"event_id": "hotline:U1", "category": "E0501", "occurred_at": 1.79e9,
                                  "description": "路口", "address": "不存在的路"}, 0.0)])
    return b


def sent(c: Centre) -> list[tuple[str, str, bytes]]:
    assert isinstance(c.outbox, MemoryOutbox)
    return c.outbox.sent


def test_pages_need_sign_in_and_wrong_password_is_refused() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        page = await client.get("/ops", allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/signin")
        assert (await client.get("/api/board")).status == 401
        form = await client.get("/signin")
        assert "script-src 'self'" in form.headers["Content-Security-Policy"]
        no_csrf = await client.post("/signin", data={"name": "ops", "password": PASSWORD}, allow_redirects=False)
        assert no_csrf.status == 403
        import re
        token = re.search(r'name="csrf_token" value="([^"]+)"', await form.text())
        assert token is not None
        wrong = await client.post("/signin", data={"name": "ops", "password": "nope", "csrf_token": token.group(1)},
                                  allow_redirects=False)
        assert wrong.status == 401
    run(c, body)


def test_a_team_member_sees_and_acts_only_on_their_teams_cases() -> None:
    """enforcement cannot read, list or act on a handling case; handling can, and its action reaches Kafka."""
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "enf")
        assert (await client.get("/api/cases/C-hand")).status == 404
        assert (await client.get("/api/cases/C-enf")).status == 200
        feed = await (await client.get("/api/feed")).json()
        assert [x["case_id"] for x in feed["cases"]] == ["C-enf"]
        cell = await (await client.get("/api/cells/310109003001001")).json()
        assert [x["case_id"] for x in cell["cases"]] == ["C-enf"]
        act = await client.post("/api/cases/C-hand/actions", json={"action": "accept"},
                                headers={"X-CSRF-Token": csrf})
        assert act.status == 404
        assert (await client.get("/api/board")).status == 403
        assert (await client.get("/ops")).status == 403
        assert sent(c) == []
    run(c, body)

    async def handling(client: Client) -> None:
        csrf = await sign_in(client, "hand")
        feed = await (await client.get("/api/feed")).json()
        rows = {x["case_id"]: x for x in feed["cases"]}
        assert set(rows) == {"C-hand", "C-done"} and rows["C-hand"]["actions"] == ["accept", "resolve", "reject"]
        act = await client.post("/api/cases/C-hand/actions", json={"action": "accept", "update_id": "u-1"},
                                headers={"X-CSRF-Token": csrf})
        assert act.status == 202
        (topic, key, raw), = sent(c)
        assert topic == c.settings.topics.case_updates and key == "C-hand"
        update = default_decoder().case_update(raw)
        assert (update.action, update.team, update.actor, update.update_id) == ("accept", "handling", "hand", "u-1")
        reject = await client.post("/api/cases/C-hand/actions", json={"action": "reject"},
                                   headers={"X-CSRF-Token": csrf})
        assert reject.status == 400        # a rejection needs a reason
        verify = await client.post("/api/cases/C-done/actions", json={"action": "verify"},
                                   headers={"X-CSRF-Token": csrf})
        assert verify.status == 409        # only supervision verifies
    run(c, handling)


def test_cookie_writes_need_the_csrf_token_and_bearer_tokens_do_not() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        await sign_in(client, "hand")
        forged = await client.post("/api/cases/C-hand/actions", json={"action": "accept"})
        assert forged.status == 403
        wrong = await client.post("/api/cases/C-hand/actions", json={"action": "accept"},
                                  headers={"X-CSRF-Token": "guess"})
        assert wrong.status == 403
        token = (await (await client.post("/api/token", json={"name": "hand", "password": PASSWORD})).json())["token"]
        client.session.cookie_jar.clear()
        ok = await client.post("/api/cases/C-hand/actions", json={"action": "accept"},
                               headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 202
        assert len(sent(c)) == 1
    run(c, body)


def test_supervision_verifies_resolved_cases_of_other_teams() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "sup")
        assert (await client.get("/api/cases/C-hand")).status == 404      # open handling case: not theirs
        detail = await (await client.get("/api/cases/C-done")).json()
        assert detail["actions"] == ["verify", "reopen"]
        resp = await client.post("/api/cases/C-done/actions", json={"action": "verify"}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 202
        assert default_decoder().case_update(sent(c)[0][2]).team == "supervision"
    run(c, body)


def test_patrol_report_from_the_feed() -> None:
    """A patrol member's report is a valid raw.patrol message with their patrol team and name."""
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "walker")
        bad = await client.post("/api/patrol", json={"category": "Z0000", "lat": 31.26, "lon": 121.49},
                                headers={"X-CSRF-Token": csrf})
        assert bad.status == 400 and "unknown category" in (await bad.json())["error"]
        ok = await client.post("/api/patrol", json={"category": "E0501", "lat": 31.26, "lon": 121.49, "note": "摊位"},
                               headers={"X-CSRF-Token": csrf})
        assert ok.status == 202
        (topic, key, raw), = sent(c)
        event = default_decoder().patrol(raw)
        assert topic == c.settings.topics.raw_patrol and event.team == "patrol-ouyang" and event.actor == "walker"
        assert key == (await ok.json())["report_id"]
        assert (await client.get("/api/feed")).status == 200
        assert (await client.post("/api/cases/C-hand/actions", json={"action": "accept"},
                                  headers={"X-CSRF-Token": csrf})).status == 403
    run(c, body)


def test_operator_places_an_unlocated_ticket_and_analyst_cannot() -> None:
    c = centre(board())

    async def analyst(client: Client) -> None:
        csrf = await sign_in(client, "analyst")
        board_json = await (await client.get("/api/board")).json()
        assert board_json["unlocated"][0]["event_id"] == "hotline:U1"
        denied = await client.post("/api/unlocated/place", json={"event_id": "hotline:U1", "lon": 121.49, "lat": 31.26},
                                   headers={"X-CSRF-Token": csrf})
        assert denied.status == 403
    run(c, analyst)

    async def operator(client: Client) -> None:
        csrf = await sign_in(client, "ops")
        unknown = await client.post("/api/unlocated/place", json={"event_id": "hotline:X", "lon": 121.49, "lat": 31.26},
                                    headers={"X-CSRF-Token": csrf})
        assert unknown.status == 404
        ok = await client.post("/api/unlocated/place", json={"event_id": "hotline:U1", "lon": 121.49, "lat": 31.26},
                               headers={"X-CSRF-Token": csrf})
        assert ok.status == 202
        (topic, key, raw), = sent(c)
        event = default_decoder().hotline(raw)
        assert topic == c.settings.topics.raw_hotline and key == "U1"
        assert event.event_id == "hotline:U1" and (event.lon, event.lat) == (121.49, 31.26)
        assert c.board.unlocated == {}
    run(c, operator)


def test_stream_sends_the_board_then_each_change() -> None:
    """The SSE stream sends the current board, then a new one within a second of a change."""
    import asyncio

    from tests.web.helpers import case_state as state

    c = centre(board())

    async def body(client: Client) -> None:
        await sign_in(client, "ops")
        resp = await client.get("/api/stream")
        assert resp.headers["Content-Type"].startswith("text/event-stream")

        async def next_event() -> dict[str, Any]:
            data = b""
            while not data.endswith(b"\n\n"):
                data += await resp.content.readline()
            line = [x for x in data.decode().splitlines() if x.startswith("data: ")][0]
            return orjson.loads(line[6:])  # type: ignore[no-any-return]

        first = await asyncio.wait_for(next_event(), 5)
        assert first["queues"]["teams"]["handling"]["open"] == 1
        c.board.apply_batch([("case-state", state("C-new", team="handling"), 0.0)])
        second = await asyncio.wait_for(next_event(), 2)
        assert second["queues"]["teams"]["handling"]["open"] == 2
        resp.close()
    run(c, body)


def test_health_and_metrics() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["cases"] == 3
        text = await (await client.get("/metrics")).text()
        assert 'cityops_cases_open{team="handling"} 1' in text
        assert "cityops_unlocated_tickets 1" in text
    run(c, body)
