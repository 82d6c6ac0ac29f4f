"""The record of notifications in the operations centre: the case page, /metrics and the board's flag."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from pipeline.web.archive import CaseArchive
from pipeline.web.live import LiveBoard
from tests.web.helpers import case_state, centre, run, sign_in

Client = TestClient[Any, Any]
CASE = "C310109018001-0a1b2c3d4e5f"


class Rows:
    """A ClickHouse stand-in answering the archive's notification queries with fixed rows."""

    def __init__(self) -> None:
        self.rows = [  # gas-company's WeCom robot: one failed attempt, then delivered 0.8 s after the assignment
            {"delivery_id": "N1", "target": "gas-company", "channel": "wecom", "kind": "dispatch", "attempt": 1,
             "status": "retry", "error": "HTTP 503", "sent": 1762322525, "latency_ms": 100,
             "since_assignment_ms": 300},
            {"delivery_id": "N1", "target": "gas-company", "channel": "wecom", "kind": "dispatch", "attempt": 2,
             "status": "delivered", "error": "", "sent": 1762322525, "latency_ms": 50, "since_assignment_ms": 800},
        ]

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if "FROM notifications WHERE case_id" in sql:
            return self.rows if params and params["case_id"] == CASE else []
        if "argMax(status, attempt)" in sql:
            return [{"target": "gas-company", "channel": "wecom", "status": "delivered", "n": 1}]
        if "uniqExact(delivery_id, attempt)" in sql:
            return [{"status": "retry", "n": 1}, {"status": "delivered", "n": 1}]
        return []


def dead_letter(channel: str = "sms", priority: int = 1) -> dict[str, Any]:
    return {"source_topic": "cityops.assignments", "partition": 0, "offset": 7, "kind": "notification",
            "reason": "notification to gas-company/sms given up: HTTP 503 (10 attempts)", "raw": "{}",
            "delivery_id": f"N-{channel}", "case_id": CASE, "target": "gas-company", "channel": channel,
            "priority": priority, "at": "2026-11-05T06:02:05Z"}


def test_the_case_page_shows_each_delivery_with_its_time_and_latency() -> None:
    """/api/cases/{id} lists gas-company / wecom delivered after 2 attempts, 0.8 s from the assignment."""
    board = LiveBoard()
    board.apply_batch([("case-state", case_state(CASE, priority=1, category="E0403"), time.time())])
    c = centre(board, archive=CaseArchive(Rows()))

    async def body(client: Client) -> None:
        await sign_in(client, "ops")
        data = await (await client.get(f"/api/cases/{CASE}")).json()
        [n] = data["notifications"]
        assert (n["target"], n["channel"], n["status"], n["attempts"], n["latency_s"]) == \
            ("gas-company", "wecom", "delivered", 2, 0.8)
        assert n["at"] == "2025-11-05T06:02:05.050000Z"
    run(c, body)


def test_a_priority_1_case_whose_notification_failed_is_flagged_on_the_board_and_in_metrics() -> None:
    """The notifier's dead letter for a P1 case raises a critical alert naming the case and the target; a P3
    failure does not; /metrics counts deliveries by target, channel and status."""
    board = LiveBoard()
    board.apply_batch([("case-state", case_state(CASE, priority=1, category="E0403"), time.time()),
                       ("deadletter", dead_letter(), time.time()),
                       ("deadletter", dead_letter("wecom", priority=3), time.time())])
    c = centre(board, archive=CaseArchive(Rows()))
    c.notification_counts = CaseArchive(Rows()).notification_counts()

    async def body(client: Client) -> None:
        await sign_in(client, "ops")
        alerts = (await (await client.get("/api/board")).json())["alerts"]
        flagged = [a for a in alerts if a["key"] == f"notify:{CASE}"]
        assert len(flagged) == 1 and flagged[0]["severity"] == "critical"
        assert "gas-company (sms)" in flagged[0]["detail"] and "wecom" not in flagged[0]["detail"]
        summary = (await (await client.get(f"/api/cases/{CASE}")).json())["case"]
        assert summary["notify_failed"] == ["gas-company/sms"]
        text = await (await client.get("/metrics")).text()
        assert 'cityops_notifications_total{channel="wecom",status="delivered",target="gas-company"} 1' in text
        assert 'cityops_notification_attempts_total{status="retry"} 1' in text
        assert "cityops_notifications_p1_failed 1" in text
    run(c, body)
