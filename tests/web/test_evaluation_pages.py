"""The analysts' evaluation page and bulletin (issue #20): this month's evaluation for operators and analysts,
linked from the operations page, the bulletin as HTML and PDF, nobody else let in, nothing inline for the CSP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pipeline.web.archive import CaseArchive
from tests.analytics.engines import ChdbDatabase
from tests.analytics.test_evaluation import month
from tests.web.helpers import centre, run, sign_in
from tests.web.open311_data import chdb_database

Client = TestClient[Any, Any]


@pytest.fixture
def db() -> Iterator[ChdbDatabase]:
    yield from chdb_database()


def test_the_analyst_sees_the_months_evaluation_and_gets_the_bulletin(db: ChdbDatabase) -> None:
    db.store(month())

    async def body(client: Client) -> None:
        await sign_in(client, "analyst")
        ops = await (await client.get("/ops")).text()
        assert 'href="/evaluation"' in ops and 'href="/bulletin.pdf"' in ops
        page = await client.get("/evaluation", params={"month": "2024-05"})
        text = await page.text()
        assert page.status == 200 and "绩效通报（2024年5月）" in text
        # the hand-built month's figures (tests/analytics/test_evaluation.py) and the links
        assert "结案 7 件，结案率 77.78%" in text and "按期结案率 44.44%" in text
        assert 'href="/bulletin.pdf?month=2024-05"' in text and 'href="/evaluation?month=2024-04"' in text
        assert "<style" not in text and 'href="/bulletin.css"' in text
        css = await client.get("/bulletin.css")
        assert css.status == 200 and css.content_type == "text/css" and "@page" in await css.text()
        pdf = await client.get("/bulletin.pdf", params={"month": "2024-05"})
        assert pdf.status == 200 and pdf.content_type == "application/pdf"
        assert (await pdf.read()).startswith(b"%PDF")
        bad = await client.get("/evaluation", params={"month": "May"})
        assert bad.status == 400

    run(centre(archive=CaseArchive(db)), body)


def test_members_are_not_let_in_and_without_clickhouse_the_page_says_so() -> None:
    async def body(client: Client) -> None:
        await sign_in(client, "enf")
        assert (await client.get("/evaluation", allow_redirects=False)).status == 403
        assert (await client.get("/bulletin.pdf", allow_redirects=False)).status == 403

    run(centre(), body)

    async def ops(client: Client) -> None:
        await sign_in(client, "ops")
        resp = await client.get("/evaluation")
        assert resp.status == 503 and "no ClickHouse" in await resp.text()

    run(centre(), ops)


def test_a_visitor_is_sent_to_sign_in() -> None:
    async def body(client: Client) -> None:
        resp = await client.get("/evaluation", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/signin?next=/evaluation"

    run(centre(), body)
