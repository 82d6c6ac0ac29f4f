"""The patrol's check before filing (核实, docs/cases.md §2.4) in the web feed: a public report the rules send to
a patrol first (status checking) is in every patrol's feed with confirm / void, the answer reaches Kafka as the
patrol's update, and nobody else may answer it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from pipeline.stages.decode import default_decoder
from pipeline.web.live import LiveBoard
from tests.web.helpers import case_state, centre, run, sign_in
from tests.web.test_app import sent

Client = TestClient[Any, Any]


def board() -> LiveBoard:
    b = LiveBoard()
    b.apply_batch([("case-state", case_state("C-check", team="patrol", status="checking"), 0.0),
                   ("case-state", case_state("C-hand", team="handling"), 0.0)])
    return b


def test_a_patrol_sees_the_check_and_confirms_it() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "walker")      # role patrol, files reports for patrol-ouyang
        feed = await (await client.get("/api/feed")).json()
        rows = {x["case_id"]: x for x in feed["cases"]}
        assert set(rows) == {"C-check"} and rows["C-check"]["actions"] == ["confirm", "void"]
        void = await client.post("/api/cases/C-check/actions", json={"action": "void"},
                                 headers={"X-CSRF-Token": csrf})
        assert void.status == 400            # a void needs its reason
        ok = await client.post("/api/cases/C-check/actions", json={"action": "confirm", "update_id": "u-9"},
                               headers={"X-CSRF-Token": csrf})
        assert ok.status == 202
        (topic, key, raw), = sent(c)
        u = default_decoder().case_update(raw)
        assert (topic, key) == (c.settings.topics.case_updates, "C-check")
        assert (u.action, u.team, u.actor, u.update_id) == ("confirm", "patrol", "walker", "u-9")
    run(c, body)


def test_a_team_member_without_a_patrol_team_can_neither_see_nor_answer_a_check() -> None:
    c = centre(board())

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "enf")
        assert (await client.get("/api/cases/C-check")).status == 404
        feed = await (await client.get("/api/feed")).json()
        assert "C-check" not in {x["case_id"] for x in feed["cases"]}
        act = await client.post("/api/cases/C-check/actions", json={"action": "confirm"},
                                headers={"X-CSRF-Token": csrf})
        assert act.status == 404 and sent(c) == []
    run(c, body)
