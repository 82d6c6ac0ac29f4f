"""The analysts' evaluation pages (issue #20): this month's evaluation (综合评价) and its bulletin (绩效通报).

    GET /evaluation             this month's evaluation (Asia/Shanghai month so far; ?month=YYYY-MM for another),
                                with links to the bulletin and to the previous month
    GET /bulletin?month=...     the bulletin as HTML (the document `cityops report bulletin` writes)
    GET /bulletin.pdf?month=... the bulletin as PDF (printed by headless Chromium)
    GET /bulletin.css           its style sheet (the pages' CSP allows no inline style)

Operators and analysts only (auth.may_view_ops). The figures come from ClickHouse through the case archive's
connection; without one (no ClickHouse configured) the pages answer 503.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.reports import bulletin as bl
from pipeline.reports import pdf
from pipeline.reports.evaluation import month_range, previous_month
from pipeline.reports.query import ReportError
from pipeline.web import auth


@dataclass(frozen=True)
class Access:
    """What the pages need of the application (handed in by pipeline.web.app, which imports this module):
    the request's centre, and the sign-in check."""
    centre: Callable[[web.Request], Any]
    require: Callable[[web.Request, Callable[[Any], bool]], Any]


def _month(request: web.Request) -> tuple[str, date, date]:
    text = request.query.get("month") or (datetime.now(UTC) + timedelta(hours=8)).strftime("%Y-%m")
    try:
        since, until = month_range(text)
    except ReportError as err:
        raise web.HTTPBadRequest(text=str(err)) from err
    return text, since, until


async def _build(access: Access, request: web.Request) -> tuple[str, bl.Bulletin]:
    access.require(request, auth.may_view_ops)
    centre = access.centre(request)
    if centre.archive is None:
        raise web.HTTPServiceUnavailable(text="no ClickHouse: the evaluation needs the history")
    text, since, until = _month(request)
    doc = await centre.run_blocking(bl.build, centre.archive.db, since, until, timeout=120)
    return text, doc


def _nav(month: str, since: date) -> str:
    prev = previous_month(since)[0].strftime("%Y-%m")
    q = html.escape(month)
    return (f'<nav class="links"><a href="/ops">← 城运中心 Operations</a>'
            f'<a href="/bulletin.pdf?month={q}">绩效通报 PDF</a><a href="/bulletin?month={q}">绩效通报 HTML</a>'
            f'<a href="/evaluation?month={html.escape(prev)}">上月 Previous month</a></nav>')


async def evaluation_page(access: Access, request: web.Request) -> web.Response:
    month, doc = await _build(access, request)
    text = bl.to_html(doc, css_href="/bulletin.css", nav=_nav(month, doc.since))
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


async def bulletin_html(access: Access, request: web.Request) -> web.Response:
    _, doc = await _build(access, request)
    return web.Response(text=bl.to_html(doc, css_href="/bulletin.css"), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def bulletin_pdf(access: Access, request: web.Request) -> web.Response:
    month, doc = await _build(access, request)

    def render() -> bytes:
        with tempfile.TemporaryDirectory(prefix="cityops-bulletin-") as tmp:
            page, out = Path(tmp) / "bulletin.html", Path(tmp) / "bulletin.pdf"
            page.write_text(bl.to_html(doc), encoding="utf-8")
            pdf.write_pdf(page, out)
            return out.read_bytes()

    try:
        data = await access.centre(request).run_blocking(render, timeout=180)
    except bl.BulletinError as err:
        raise web.HTTPServiceUnavailable(text=str(err)) from err
    return web.Response(body=data, content_type="application/pdf", headers={
        "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="bulletin-{month}.pdf"'})


async def bulletin_css(access: Access, request: web.Request) -> web.Response:
    access.require(request, auth.may_view_ops)       # every page but sign-in needs a session, its style sheet too
    return web.Response(text=bl.CSS, content_type="text/css")


def routes(access: Access) -> list[Any]:
    return [web.get("/evaluation", partial(evaluation_page, access)),
            web.get("/bulletin", partial(bulletin_html, access)),
            web.get("/bulletin.pdf", partial(bulletin_pdf, access)),
            web.get("/bulletin.css", partial(bulletin_css, access))]
