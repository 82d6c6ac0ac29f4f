"""Browser tests in headless Chromium against the real stack: Kafka, ClickHouse, a worker and the web server.

A ticket produced to Kafka appears in the operations centre without a reload; the member of the team it was
dispatched to accepts and resolves it from the team feed and the operations centre shows the change; a member
of another team cannot see it; the map renders the shipped grid. Screenshots go to var/screenshots/.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` package (its driver only; no browser
download). Marked kafka + clickhouse: `make test` runs them with the local stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import ROOT, Settings
from pipeline.web.users import User, Users, hash_password, write_users
from tests.support import produce
from tests.web.helpers import browser_sign_in, launch_chromium, require_chromium, serving_web

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
SHOTS = ROOT / "var" / "screenshots"
PASSWORD = "browser-test-pass"
TEAM_OF = {"enforcement": "enf", "handling": "hand", "supervision": "sup"}


@pytest.fixture
def stack(isolated_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """Topics, schema, a worker and a web server of the test's own; yields (settings, base url)."""
    from pipeline.runtime.topics import ensure_topics
    from pipeline.sink.migrate import migrate

    require_chromium()
    s = isolated_settings
    ensure_topics(s)
    migrate(s)
    h = hash_password(PASSWORD)
    users = [User("ops", "operator", password_hash=h),
             *[User(name, "member", team=team, password_hash=h) for team, name in TEAM_OF.items()]]
    users_file = tmp_path / "users.yaml"
    write_users(users_file, Users({u.name: u for u in users}))
    env = {"CITYOPS_USERS": str(users_file), "CITYOPS_SECRET": "t" * 40, "CITYOPS_WEB_LOOKBACK_H": "1"}
    with serving_web(s, tmp_path, env) as base:
        yield s, base


def _sign_in(page: Any, base: str, name: str) -> None:
    browser_sign_in(page, base, name, PASSWORD)


def _open_count(page: Any, team: str) -> str:
    return str(page.locator(f'#team-queues tr[data-key="{team}"] td.open').inner_text())


def test_ticket_to_resolution_live_in_the_browser(stack: tuple[Settings, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, base = stack
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            ops = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
            _sign_in(ops, base, "ops")
            expect(ops.locator("#map")).to_have_attribute("data-ready", "8307", timeout=30_000)
            expect(ops.locator('#team-queues tr[data-key="enforcement"]')).to_be_visible()
            ops.screenshot(path=str(SHOTS / "ops-empty.png"), full_page=True)
            loaded_at = ops.evaluate("performance.timeOrigin")

            # a vendor complaint on North Sichuan Road (Hongkou), produced straight to the hotline topic
            ticket = {"service_request_id": "BROWSER-1", "requested_datetime": datetime.now(UTC).isoformat(),
                      "service_code": "E0501", "lat": 31.2605, "long": 121.4838, "description": "占道经营 13912345678",
                      "caller": {"name": "王小明", "phone": "13912345678"}}
            produce(settings, settings.topics.raw_hotline, [(b"BROWSER-1", orjson.dumps(ticket))])
            expect(ops.locator("#team-queues tfoot, #team-queues tbody")).to_contain_text("1", timeout=60_000)
            board = ops.request.get(base + "/api/board").json()
            team = next(t for t, q in board["queues"]["teams"].items() if q["open"] == 1)
            assert ops.evaluate("performance.timeOrigin") == loaded_at          # no reload happened
            assert "13912345678" not in ops.content()
            ops.screenshot(path=str(SHOTS / "ops-live.png"), full_page=True)
            cell = next(iter(board["cells"]))
            ops.evaluate(f"gridMap.select({orjson.dumps(cell).decode()})")
            x, y = ops.evaluate(f"gridMap.screenOf({orjson.dumps(cell).decode()})")
            ops.locator("#map").click(position={"x": x, "y": y})
            expect(ops.locator("#cell-cases li.case")).to_have_count(1, timeout=10_000)
            case_id = ops.locator("#cell-cases li.case").get_attribute("data-case-id")
            assert case_id

            member = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
            _sign_in(member, base, TEAM_OF[team])
            row = member.locator(f'#feed li.case[data-case-id="{case_id}"]')
            expect(row).to_be_visible(timeout=30_000)
            member.screenshot(path=str(SHOTS / f"feed-{team}.png"), full_page=True)
            row.locator("button.act-accept").click()
            expect(ops.locator(f'#cell-cases li.case[data-case-id="{case_id}"] .status')).to_contain_text(
                "accepted", timeout=30_000)
            row = member.locator(f'#feed li.case[data-case-id="{case_id}"]')
            expect(row.locator("button.act-resolve")).to_be_visible(timeout=30_000)
            row.locator("input.note").first.fill("摊位已清理 stall cleared")
            row.locator("button.act-resolve").click()
            expect(ops.locator(f'#cell-cases li.case[data-case-id="{case_id}"] .status')).to_contain_text(
                "resolved", timeout=30_000)
            expect(ops.locator(f'#team-queues tr[data-key="{team}"] td.open')).to_have_text("0", timeout=30_000)
            assert ops.evaluate("performance.timeOrigin") == loaded_at
            ops.screenshot(path=str(SHOTS / "ops-resolved.png"), full_page=True)

            other_team = next(t for t in TEAM_OF if t not in (team, "supervision"))
            other = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
            _sign_in(other, base, TEAM_OF[other_team])
            expect(other.locator("#feed li")).to_have_count(1, timeout=10_000)      # the "no assignments" row
            assert case_id not in other.content()
            assert other.request.get(f"{base}/api/cases/{case_id}").status == 404
            other.screenshot(path=str(SHOTS / f"feed-{other_team}.png"), full_page=True)

            ops.goto(f"{base}/cases/{case_id}")
            # new, dispatched, accepted, resolved
            expect(ops.locator("#timeline li")).to_have_count(4, timeout=30_000)
            expect(ops.locator("#reports tbody tr")).to_have_count(1)
            expect(ops.locator("#dispatches li")).to_have_count(1)
            assert "13912345678" not in ops.content()
            ops.screenshot(path=str(SHOTS / "case.png"), full_page=True)
        finally:
            browser.close()
