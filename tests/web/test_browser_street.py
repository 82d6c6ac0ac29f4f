"""Browser tests of issue #21 in headless Chromium against the real stack (Kafka, ClickHouse, a worker, the web):
a new case appears on the wall screen and in the team's feed without a reload; the feed on a 360-px phone says
where the case is (place, a map of the cell and its neighbours, distance and direction from the phone); a resolve
taken offline with an after photo is kept on the phone and applied once when the connection is back; the photo
comes back without its GPS position under the case's access rules; a patrol reports with a photo.
Screenshots go to var/screenshots/ (look at them).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import ExifTags, Image

from pipeline.config import ROOT, Settings
from pipeline.web.users import User, Users, hash_password, write_users
from tests.support import produce, wait_for
from tests.web.helpers import browser_sign_in, launch_chromium, require_chromium, serving_web

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
SHOTS = ROOT / "var" / "screenshots"
PASSWORD = "browser-street-pass"
PHONE = {"width": 360, "height": 740}
# a storm-drain grate (P0104: the shipped rules want an after photo) by North Sichuan Road, Hongkou
GRATE = {"lat": 31.2605, "long": 121.4838}


@pytest.fixture
def street(isolated_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, Path]]:
    from pipeline.runtime.topics import ensure_topics
    from pipeline.sink.migrate import migrate

    require_chromium()
    s = isolated_settings
    ensure_topics(s)
    migrate(s)
    h = hash_password(PASSWORD)
    users = [User("ops", "operator", password_hash=h), User("hand", "member", team="handling", password_hash=h),
             User("sup", "member", team="supervision", password_hash=h),
             User("walker", "patrol", patrol_team="patrol-beiwaitan", password_hash=h)]
    users_file = tmp_path / "users.yaml"
    write_users(users_file, Users({u.name: u for u in users}))
    photos = tmp_path / "photos"
    env = {"CITYOPS_USERS": str(users_file), "CITYOPS_SECRET": "s" * 40, "CITYOPS_WEB_LOOKBACK_H": "1",
           "CITYOPS_PHOTO_DIR": str(photos)}
    with serving_web(s, tmp_path, env) as base:
        yield s, base, photos


def _sign_in(page: Any, base: str, name: str) -> None:
    browser_sign_in(page, base, name, PASSWORD)


def _photo_with_gps() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "StreetPhone-SN-77"
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (31.0, 15.0, 37.8),
                                  ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (121.0, 29.0, 1.7)}
    img = Image.new("RGB", (320, 240), (90, 110, 130))
    for x in range(60, 260):
        for y in range(100, 140):
            img.putpixel((x, y), (230, 200, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def _ticket(tid: str, code: str, where: dict[str, float], text: str) -> tuple[bytes, bytes]:
    msg = {"service_request_id": tid, "requested_datetime": datetime.now(UTC).isoformat(), "service_code": code,
           "lat": where["lat"], "long": where["long"], "description": text,
           "caller": {"name": "李大伟", "phone": "13700001111"}}
    return tid.encode(), orjson.dumps(msg)


def test_the_street_and_the_wall_in_the_browser(street: tuple[Settings, str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, base, photos = street
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            wall = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
            _sign_in(wall, base, "ops")
            wall.goto(base + "/wall")
            expect(wall.locator("#map")).to_have_attribute("data-ready", "8307", timeout=30_000)
            expect(wall.locator("#w-today")).to_have_text("0", timeout=30_000)
            loaded_at = wall.evaluate("performance.timeOrigin")

            ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                      geolocation={"latitude": 31.2628, "longitude": 121.4850},
                                      permissions=["geolocation"])
            phone = ctx.new_page()
            _sign_in(phone, base, "hand")

            produce(settings, settings.topics.raw_hotline,
                    [_ticket("STREET-1", "P0104", GRATE, "雨水箅子断了一根，13700001111 李大伟")])
            # the new case moves the wall and reaches the team's feed, neither reloaded
            expect(wall.locator("#w-today")).to_have_text("1", timeout=60_000)
            expect(wall.locator("#w-ticker li")).to_have_count(1, timeout=30_000)
            assert wall.evaluate("performance.timeOrigin") == loaded_at
            card = phone.locator("#feed li.case").first
            expect(card).to_be_visible(timeout=60_000)
            case_id = card.get_attribute("data-case-id")
            assert case_id

            # where: the category's name, the place in words, the map of the cell and its neighbours, a countdown
            expect(card.locator(".cat-name")).to_have_text("雨水箅子")
            expect(card.locator(".place .spot")).to_contain_text("附近")
            expect(card.locator(".place .where")).to_contain_text("网格 grid 310109")
            expect(card.locator(".countdown")).to_contain_text("剩余")
            cell = phone.evaluate(f"fetch('/api/feed').then(r => r.json()).then(f => f.cases.find("
                                  f"c => c.case_id === {orjson.dumps(case_id).decode()}).cell)")
            expect(card.locator("canvas.minimap")).to_have_attribute("data-cell", cell, timeout=10_000)
            assert int(card.locator("canvas.minimap").get_attribute("data-cells") or 0) >= 4   # with its neighbours
            phone.click("#share-position")
            expect(card.locator(".place .distance")).to_contain_text("距你", timeout=10_000)
            expect(card.locator(".place .distance")).to_contain_text("m")
            small = phone.evaluate("""() => [...document.querySelectorAll(
                '#feed button, #feed input, #feed .photo-pick')].filter(
                e => e.offsetParent !== null && e.getBoundingClientRect().height < 44).length""")
            assert small == 0, "touch targets under 44 px"
            assert "13700001111" not in phone.content() and "李大伟" not in phone.content()
            phone.screenshot(path=str(SHOTS / "feed-place.png"), full_page=True)

            card.locator("button.act-accept").click()
            expect(card.locator("button.act-resolve")).to_be_visible(timeout=30_000)

            # offline: the resolve with its after photo stays on the phone
            ctx.set_offline(True)
            card = phone.locator(f'#feed li.case[data-case-id="{case_id}"]')
            card.locator("input.note").first.fill("已更换箅子 grate replaced")
            card.locator("input.after-photo").set_input_files(
                files=[{"name": "after.jpg", "mimeType": "image/jpeg", "buffer": _photo_with_gps()}])
            card.locator("button.act-resolve").click()
            expect(phone.locator("#queue-note")).to_contain_text("1", timeout=10_000)
            expect(card.locator(".queued")).to_contain_text("离线", timeout=10_000)
            phone.screenshot(path=str(SHOTS / "feed-offline.png"), full_page=True)
            # a second copy of the same queued action (a resend whose answer was lost looks the same)
            phone.evaluate("""() => { const k = 'cityops.outbox.v1'; const q = JSON.parse(localStorage.getItem(k));
                q.push(Object.assign({}, q[0])); localStorage.setItem(k, JSON.stringify(q)); }""")
            ops_api = wall.request
            assert ops_api.get(f"{base}/api/cases/{case_id}").json()["case"]["status"] == "accepted"

            ctx.set_offline(False)          # back online: the queue is sent
            expect(phone.locator("#queue-note")).to_be_hidden(timeout=30_000)
            assert wait_for(lambda: ops_api.get(f"{base}/api/cases/{case_id}").json()["case"]["status"] == "resolved",
                            60)
            # applied once: one resolved step, whatever was sent twice
            assert wait_for(lambda: len(ops_api.get(f"{base}/api/cases/{case_id}").json()["timeline"]) >= 4, 60)
            timeline = ops_api.get(f"{base}/api/cases/{case_id}").json()["timeline"]
            assert [t["status"] for t in timeline].count("resolved") == 1
            after_url = next(t["photo_url"] for t in timeline if t["status"] == "resolved")
            assert after_url and after_url.startswith("/photos/")

            # the photo: stored without its GPS position, shown to the verifier, not to others
            got = ops_api.get(base + after_url)
            assert got.status == 200
            back = Image.open(io.BytesIO(got.body()))
            assert not dict(back.getexif()) and b"StreetPhone" not in got.body()
            assert len(list(photos.rglob("*.jpg"))) == 1
            sup = browser.new_context(viewport=PHONE, is_mobile=True).new_page()
            _sign_in(sup, base, "sup")
            sup_card = sup.locator(f'#feed li.case[data-case-id="{case_id}"]')
            expect(sup_card).to_be_visible(timeout=30_000)
            sup_card.locator("button.more").click()
            img = sup_card.locator("figure.photo img")
            expect(img).to_have_count(1, timeout=20_000)
            assert wait_for(lambda: sup.evaluate(
                "() => { const i = document.querySelector('figure.photo img'); return i && i.naturalWidth > 0; }"), 20)
            expect(sup_card.locator("ul.reports li")).to_have_count(1)
            assert "13700001111" not in sup.content()
            sup.screenshot(path=str(SHOTS / "feed-verify-photos.png"), full_page=True)

            # a patrol reports with a photo; the report reaches a case whose page shows it
            walker_ctx = browser.new_context(viewport=PHONE, is_mobile=True)
            walker = walker_ctx.new_page()
            _sign_in(walker, base, "walker")
            expect(walker.locator("#patrol-section")).to_be_visible()
            walker.select_option("#patrol-category", "E0501")
            walker.fill("#patrol-lat", "31.2561")
            walker.fill("#patrol-lon", "121.4921")
            walker.locator("#patrol-photo").set_input_files(
                files=[{"name": "vendor.jpg", "mimeType": "image/jpeg", "buffer": _photo_with_gps()}])
            walker.fill("#patrol-note", "路口流动摊贩")
            walker.click("#patrol-submit")
            expect(walker.locator("#patrol-result")).to_contain_text("已上报 Reported", timeout=30_000)
            walker.screenshot(path=str(SHOTS / "feed-patrol.png"), full_page=True)
            expect(wall.locator("#w-today")).to_have_text("2", timeout=60_000)
            wall.wait_for_timeout(1500)
            wall.screenshot(path=str(SHOTS / "wall.png"))
            assert wall.evaluate("performance.timeOrigin") == loaded_at
            from grid.index import GridIndex

            vendor_cell = GridIndex.load().locate(121.4921, 31.2561).cell
            cases = ops_api.get(f"{base}/api/cells/{vendor_cell}").json()["cases"]
            assert len(cases) == 1
            case_page = wall.context.new_page()
            case_page.goto(f"{base}/cases/{cases[0]['case_id']}")
            expect(case_page.locator("#photos figure.photo img")).to_have_count(1, timeout=60_000)
            src = case_page.locator("#photos figure.photo img").get_attribute("src")
            assert src and src.startswith("/photos/")
            statuses: list[int] = []
            assert wait_for(lambda: statuses.append(ops_api.get(base + src).status) or statuses[-1] == 200,
                            30), statuses
            case_page.reload()
            assert wait_for(lambda: case_page.evaluate(
                "() => { const i = document.querySelector('#photos img'); return !!i && i.naturalWidth > 0; }"), 30)
            case_page.screenshot(path=str(SHOTS / "case-photos.png"), full_page=True)
        finally:
            browser.close()
