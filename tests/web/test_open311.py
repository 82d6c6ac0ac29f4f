"""The Open311 ingest API: every endpoint, every error status, and no personal data in answers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from pipeline.decode import MAX_MESSAGE_BYTES, default_decoder
from pipeline.taxonomy import default_taxonomy
from pipeline.web.live import LiveBoard
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.ratelimit import RateLimiter
from tests.web.helpers import API_KEY, NOW, centre, iso, run

Client = TestClient[Any, Any]
TICKET = {"api_key": API_KEY, "service_code": "E0501", "lat": "31.265", "long": "121.4905",
          "description": "有人占道经营，电话13912345678", "first_name": "小明", "last_name": "王",
          "phone": "13912345678", "email": "wang@example.com"}


def test_services_lists_the_taxonomy() -> None:
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.get("/open311/v2/services.json")
        assert resp.status == 200
        services = await resp.json()
        assert [s["service_code"] for s in services] == default_taxonomy().codes()
        assert all(s["metadata"] is False and s["type"] == "realtime" for s in services)
        one = await client.get("/open311/v2/services/E0501.json")
        assert one.status == 200 and (await one.json())["service_code"] == "E0501"
        missing = await client.get("/open311/v2/services/X9999.json")
        assert missing.status == 404 and (await missing.json())[0]["code"] == 404
    run(c, body)


def test_post_writes_a_valid_ticket_without_clear_personal_data_in_the_answer() -> None:
    """A form POST goes to the hotline topic as a ticket the worker's decoder accepts; the answer is its id."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post("/open311/v2/requests.json", data=TICKET)
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        assert "13912345678" not in text and "王小明" not in text
        answer = orjson.loads(text)
        ticket_id = answer[0]["service_request_id"]
        outbox = c.outbox
        assert isinstance(outbox, MemoryOutbox)
        (topic, key, raw), = outbox.sent
        assert topic == c.settings.topics.raw_hotline and key == ticket_id
        event = default_decoder().hotline(raw)          # the worker accepts it
        assert event.event_id == f"hotline:{ticket_id}" and event.category == "E0501"
        sent = orjson.loads(raw)
        # to the worker only, as the contract says
        assert sent["caller"] == {"name": "王 小明", "phone": "13912345678"}
        assert "email" not in raw.decode()
        status = await client.get(f"/open311/v2/requests/{ticket_id}.json")
        assert status.status == 200
        info = (await status.json())[0]
        assert info["status"] == "open" and info["service_code"] == "E0501"
        assert "13912345678" not in await status.text()
    run(c, body)


def test_post_json_with_the_hotline_ticket_number_and_header_key() -> None:
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post("/open311/v2/requests.json", headers={"X-Api-Key": API_KEY},
                                 json={"service_request_id": "HK-2026-001", "service_code": "P0101",
                                       "address_string": "虹口区四川北路1号"})
        assert resp.status == 200
        assert (await resp.json())[0]["service_request_id"] == "HK-2026-001"
    run(c, body)


def test_error_statuses() -> None:
    """400 with the decoder's reason, 401 without a key, 403 with a wrong one, 404 unknown, 413 too large."""
    c = centre()

    async def body(client: Client) -> None:
        bad_code = await client.post("/open311/v2/requests.json", data={**TICKET, "service_code": "X1"})
        assert bad_code.status == 400
        reason = (await bad_code.json())[0]["description"]
        assert reason.startswith("service_code: unknown category code")
        no_place = {k: v for k, v in TICKET.items() if k not in ("lat", "long")}
        assert (await (await client.post("/open311/v2/requests.json", data=no_place)).json())[0][
            "description"] == "location: neither lat/long nor address_string given"
        swapped = await client.post("/open311/v2/requests.json", data={**TICKET, "lat": "121.49", "long": "31.26"})
        assert swapped.status == 400 and "swapped" in (await swapped.json())[0]["description"]
        nan = await client.post("/open311/v2/requests.json", data={**TICKET, "lat": "north"})
        assert nan.status == 400 and (await nan.json())[0]["description"].startswith("lat: must be a number")
        broken = await client.post("/open311/v2/requests.json", data=b"{not json",
                                   headers={"Content-Type": "application/json", "X-Api-Key": API_KEY})
        assert broken.status == 400
        keyless = {k: v for k, v in TICKET.items() if k != "api_key"}
        no_key = await client.post("/open311/v2/requests.json", data=keyless)
        assert no_key.status == 401
        wrong = await client.post("/open311/v2/requests.json", data={**TICKET, "api_key": "nope"})
        assert wrong.status == 403
        huge = await client.post("/open311/v2/requests.json", data={**TICKET, "description": "x" * MAX_MESSAGE_BYTES})
        assert huge.status == 413
        assert (await huge.json())[0]["code"] == 413
        unknown = await client.get("/open311/v2/requests/NOPE-1.json")
        assert unknown.status == 404
        empty = await client.get("/open311/v2/requests.json")
        assert empty.status == 400
        assert isinstance(c.outbox, MemoryOutbox) and c.outbox.sent == []
    run(c, body)


def test_rate_limit_answers_429_with_retry_after() -> None:
    """A client past its burst is told to wait; other clients are not affected."""
    clock = [0.0]
    c = centre(limiter=RateLimiter(rate=1.0, burst=3.0, clock=lambda: clock[0]))

    async def body(client: Client) -> None:
        statuses = [(await client.get("/open311/v2/services.json")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get("/open311/v2/services.json")
        assert int(limited.headers["Retry-After"]) >= 1
        clock[0] += 2.0
        assert (await client.get("/open311/v2/services.json")).status == 200
    run(c, body)


def test_kafka_down_answers_503() -> None:
    c = centre()
    assert isinstance(c.outbox, MemoryOutbox)
    c.outbox.fail = ConnectionError("broker down")

    async def body(client: Client) -> None:
        resp = await client.post("/open311/v2/requests.json", data=TICKET)
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    run(c, body)


def test_status_of_unlocated_and_of_a_closed_case() -> None:
    """A ticket in the unlocated queue is open awaiting placement; a ticket whose case closed is closed."""
    board = LiveBoard()
    board.apply_batch([("unlocated", {"event_id": "hotline:U1", "category": "E0501", "occurred_at": 1.8e9,
                                      "address": "某小区"}, 0.0),
                       ("case-state", {"case_id": "C9", "category": "P0101", "team": "handling",
                                       "status": "closed", "closed_at": iso(NOW), "revision": 9}, 0.0)])

    class Archive:
        def case_of_event(self, event_id: str) -> str | None:
            return {"hotline:K1": "C9", "hotline:OLD": "C-forgotten"}.get(event_id)

    c = centre(board=board, archive=Archive())

    async def body(client: Client) -> None:
        un = (await (await client.get("/open311/v2/requests/U1.json")).json())[0]
        assert un["status"] == "open" and "placed" in un["status_notes"]
        closed = (await (await client.get("/open311/v2/requests.json?service_request_id=K1,U1,none")).json())
        assert [r["service_request_id"] for r in closed] == ["K1", "U1"]
        assert closed[0]["status"] == "closed" and closed[0]["agency_responsible"] == "handling"
        old = (await (await client.get("/open311/v2/requests/OLD.json")).json())[0]
        assert old["status"] == "closed"
    run(c, body)
