"""Photos (metadata stripped, stored, served under the case's access rules, attached to a resolve or a patrol
report), the feed's place, and the wall screen's figures, with in-memory Kafka (no services)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from PIL import ExifTags, Image

from pipeline.stages.decode import default_decoder
from pipeline.web.alerts import ConfigWatch
from pipeline.web.centre import Centre
from pipeline.web.live import LiveBoard
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.photos import PhotoError, S3PhotoStore, clean_photo
from pipeline.web.street import WallStats, wall_view
from tests.web.helpers import NOW, case_state, centre, iso, run, sign_in

Client = TestClient[Any, Any]
GPS = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (31.0, 15.0, 30.0),
       ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (121.0, 29.0, 10.0)}


def photo(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """An image with a GPS position and a camera make in its EXIF, as a phone writes it."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo-Serial-0042"
    exif[ExifTags.IFD.GPSInfo] = GPS
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


# -- cleaning ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_location_metadata_is_removed_and_the_picture_kept(fmt: str) -> None:
    data = photo(fmt)
    assert dict(Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo))   # the phone wrote one
    clean = clean_photo(data)
    back = Image.open(io.BytesIO(clean.data))
    back.load()
    assert back.size == (64, 48) and back.format == fmt
    assert not dict(back.getexif()) and b"PhoneCo" not in clean.data
    assert clean.removed
    original = Image.open(io.BytesIO(data)).convert("RGB")
    assert back.convert("RGB").tobytes() == original.tobytes()       # the same pixels: not re-encoded


def test_what_is_not_a_photo_is_refused_with_a_reason() -> None:
    with pytest.raises(PhotoError, match="not a JPEG, PNG or WebP"):
        clean_photo(b"%PDF-1.4 not an image")
    with pytest.raises(PhotoError, match="empty"):
        clean_photo(b"")
    with pytest.raises(PhotoError, match="over the limit"):
        clean_photo(photo(), max_bytes=100)
    with pytest.raises(PhotoError, match="broken JPEG"):
        clean_photo(photo()[:40])
    png = photo("PNG")
    with pytest.raises(PhotoError, match="broken PNG"):
        clean_photo(png[:-12])          # no IEND


def test_the_s3_signature_is_the_one_botocore_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS Signature V4 of a PUT, compared with botocore's signer (written by others) on the same request."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    store = S3PhotoStore("http://127.0.0.1:9000", "city-photos", "AKIDEXAMPLE", secret, region="cn-east-2")
    body = b"\xff\xd8 some bytes"
    at = datetime(2026, 3, 2, 1, 2, 3, tzinfo=UTC)
    path = "/city-photos/photos/abcdef123456.jpg"
    mine = store.signed_headers("PUT", path, body, at, {"Content-Type": "image/jpeg"})
    req = AWSRequest(method="PUT", url="http://127.0.0.1:9000" + path, data=body,
                     headers={"Content-Type": "image/jpeg"})
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at.replace(tzinfo=None))
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", secret), "s3", "cn-east-2")
    signer.add_auth(req)
    assert req.headers["X-Amz-Date"] == "20260302T010203Z"
    theirs = req.headers["Authorization"]
    assert mine["authorization"].split("Signature=")[1] == theirs.split("Signature=")[1]


# -- the API ----------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def photo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CITYOPS_PHOTO_DIR", str(tmp_path / "photos"))
    return tmp_path / "photos"


def street_centre() -> Centre:
    b = LiveBoard({"310109003": "提篮桥街道"})
    b.apply_batch([("case-state", case_state("C-hand", team="handling", category="E0501"), 0.0),
                   ("case-state", case_state("C-grate", team="handling", category="P0104", status="accepted",
                                             cell="310109009015007", lon=121.4804012, lat=31.2567299), 0.0),
                   ("case-state", case_state("C-enf", team="enforcement"), 0.0)])
    return centre(b, config=ConfigWatch())


def form(data: bytes, **fields: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for k, v in fields.items():
        f.add_field(k, v)
    f.add_field("photo", data, filename="p.jpg", content_type="image/jpeg")
    return f


def sent(c: Centre, topic: str) -> list[dict[str, Any]]:
    assert isinstance(c.outbox, MemoryOutbox)
    return c.outbox.on(topic)


def test_an_after_photo_round_trip_under_the_case_access_rules(photo_dir: Path) -> None:
    c = street_centre()

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "hand")
        h = {"X-CSRF-Token": csrf}
        need = await client.post("/api/cases/C-grate/actions", json={"action": "resolve", "note": "换了"}, headers=h)
        assert need.status == 400 and "needs an after photo" in (await need.json())["error"]
        bad = await client.post("/api/photos", data=form(b"GIF89a...", kind="after", case_id="C-grate"), headers=h)
        assert bad.status == 400 and "not a JPEG" in (await bad.json())["error"]
        up = await client.post("/api/photos", data=form(photo(), kind="after", case_id="C-grate", upload_id="u-1"),
                               headers=h)
        assert up.status == 201, await up.text()
        url = (await up.json())["url"]
        again = await client.post("/api/photos", data=form(photo(), kind="after", case_id="C-grate", upload_id="u-1"),
                                  headers=h)
        assert (await again.json())["url"] == url          # a retried upload is the same photo
        stored = list(photo_dir.rglob("*.jpg"))
        assert len(stored) == 1 and b"PhoneCo" not in stored[0].read_bytes()
        got = await client.get(url)
        assert got.status == 200 and got.content_type == "image/jpeg" and "private" in got.headers["Cache-Control"]
        assert Image.open(io.BytesIO(await got.read())).size == (64, 48)
        ok = await client.post("/api/cases/C-grate/actions", headers=h,
                               json={"action": "resolve", "note": "已更换", "photo_url": url, "update_id": "upd-1"})
        assert ok.status == 202, await ok.text()
        (msg,) = sent(c, c.settings.topics.case_updates)
        assert msg["photo_url"] == url and default_decoder().case_update(orjson.dumps(msg)).photo_url == url
        wrong_case = await client.post("/api/cases/C-hand/actions", headers=h,
                                       json={"action": "resolve", "note": "x", "photo_url": url})
        assert wrong_case.status == 400 and "not an after photo you uploaded for this case" in (
            await wrong_case.json())["error"]
        plain = await client.post("/api/cases/C-hand/actions", json={"action": "resolve", "note": "清走"}, headers=h)
        assert plain.status == 202                          # E0501 needs no photo
        await client.post("/signout", data={"csrf_token": csrf})

        csrf = await sign_in(client, "enf")                 # another team: the case's rules apply to its photo
        assert (await client.get(url)).status == 404
        assert (await client.post("/api/photos", data=form(photo(), kind="after", case_id="C-grate"),
                                  headers={"X-CSRF-Token": csrf})).status == 404
        await client.post("/signout", data={"csrf_token": csrf})
        await sign_in(client, "ops")                        # operators see every case
        assert (await client.get(url)).status == 200
    run(c, body)


def test_a_patrol_report_with_a_photo(photo_dir: Path) -> None:
    c = street_centre()

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "walker")
        h = {"X-CSRF-Token": csrf}
        up = await client.post("/api/photos", data=form(photo("PNG"), kind="report", upload_id="r-1"), headers=h)
        assert up.status == 201
        url = (await up.json())["url"]
        assert url.endswith(".png")
        report = {"category": "E0501", "lat": 31.26, "lon": 121.49, "photo_url": url,
                  "report_id": "WEB-20260302-0123abcd4567"}
        ok = await client.post("/api/patrol", headers=h, json=report)
        assert ok.status == 202
        (msg,) = sent(c, c.settings.topics.raw_patrol)
        assert msg["photo_url"] == url and msg["report_id"] == "WEB-20260302-0123abcd4567"
        assert default_decoder().patrol(orjson.dumps(msg)).media_url == url
        meta = orjson.loads(next(photo_dir.rglob("*.json")).read_bytes())
        assert meta["event_id"] == "patrol:WEB-20260302-0123abcd4567" and meta["uploader"] == "walker"
        assert (await client.get(url)).status == 200        # its own photo, before it is any case's
        bad_id = await client.post("/api/patrol", headers=h, json={"category": "E0501", "lat": 31.26, "lon": 121.49,
                                                                    "report_id": "../../x"})
        assert bad_id.status == 400 and "report_id" in (await bad_id.json())["error"]
        after = await client.post("/api/photos", data=form(photo(), kind="after", case_id="C-hand"), headers=h)
        assert after.status in (403, 404)                   # a patrol resolves nothing
        await client.post("/signout", data={"csrf_token": csrf})
        await sign_in(client, "hand")                       # the photo's case is not known yet: not shown
        assert (await client.get(url)).status == 404
    run(c, body)


def test_the_feed_says_where_each_case_is() -> None:
    c = street_centre()

    async def body(client: Client) -> None:
        await sign_in(client, "hand")
        feed = await (await client.get("/api/feed")).json()
        rows = {r["case_id"]: r for r in feed["cases"]}
        grate = rows["C-grate"]
        assert grate["category_name"] == "雨水箅子" and grate["after_photo_required"] is True
        assert rows["C-hand"]["after_photo_required"] is False
        place = grate["place"]
        assert place["subdistrict"] == "欧阳路街道" and place["grid"] == "310109009015"
        assert place["cell"] == "310109009015007"
        # the nearest gazetteer point, checked by brute force over the gazetteer's own roads and places
        import math

        from grid.gazetteer import Gazetteer
        from pipeline.notify.place import M_PER_DEG
        gaz = Gazetteer.load()
        k = math.cos(math.radians(31.265))
        nearest_place = min(math.hypot((p.point[0] - 121.4804012) * k, p.point[1] - 31.2567299) * M_PER_DEG
                            for p in gaz.places)
        assert place["spot"] and place["spot_m"] is not None and place["spot_m"] <= nearest_place + 1
    run(c, body)


# -- the wall ---------------------------------------------------------------------------------------------

def test_the_wall_counts_today_and_the_last_hour_and_only_operators_see_it() -> None:
    # the board's clock is the rows' NOW: with the wall clock, a run crossing midnight in Shanghai (16:00 UTC)
    # between the import of NOW and this test found no case "today" in /api/wall (it failed a CI run)
    b = LiveBoard(clock=lambda: NOW)
    today = NOW.replace(hour=4, minute=0) if NOW.hour >= 5 else NOW - timedelta(minutes=30)
    rows = [case_state("W1", created_ago=timedelta(minutes=10), discovered_by="patrol"),
            case_state("W2", created_ago=timedelta(minutes=30), discovered_by="citizen"),
            case_state("W3", created_ago=timedelta(hours=30), discovered_by="sensor"),          # not today
            case_state("W4", created_ago=NOW - today + timedelta(minutes=1) if NOW - today > timedelta(hours=1)
                       else timedelta(minutes=50), discovered_by="sensor", due_in=timedelta(hours=-1))]
    b.apply_batch([("case-state", r, 0.0) for r in rows])
    c = centre(b)
    stats = WallStats()
    stats.observe([("assignment", {"kind": "dispatch", "case_id": "W1", "category": "E0501", "team": "handling",
                                   "subdistrict": "310109003", "created_at": iso(NOW)}, 0.0),
                   ("assignment", {"kind": "rework", "case_id": "W2", "team": "handling"}, 0.0),
                   ("assignment", {"kind": "escalation", "case_id": "W4", "category": "E0501", "team": "command",
                                   "created_at": iso(NOW + timedelta(seconds=5))}, 0.0)])
    view = wall_view(c, stats, now=NOW)
    from zoneinfo import ZoneInfo
    midnight = datetime.combine(NOW.astimezone(ZoneInfo("Asia/Shanghai")).date(), datetime.min.time(),
                                ZoneInfo("Asia/Shanghai"))
    expected_today = [r for r in rows if datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) >= midnight]
    proactive = sum(1 for r in expected_today if r["discovered_by"] != "citizen")
    assert view["today"]["cases"] == len(expected_today)
    assert view["today"]["discovery_rate"] == (proactive / len(expected_today) if expected_today else None)
    since = max(midnight, NOW - timedelta(hours=1))
    last_hour = {r["case_id"] for r in rows if datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) >= since}
    assert {r["case_id"] for r in view["recent"]} == last_hour
    assert [t["kind"] for t in view["ticker"]] == ["escalation", "new"]       # newest first, no rework
    assert view["queues"]["total"]["overdue"] == 1

    async def body(client: Client) -> None:
        csrf = await sign_in(client, "hand")
        assert (await client.get("/api/wall")).status == 403
        await client.post("/signout", data={"csrf_token": csrf})
        await sign_in(client, "ops")
        page = await client.get("/wall")
        assert page.status == 200 and "wall.js" in await page.text()
        assert (await (await client.get("/api/wall")).json())["today"]["cases"] == len(expected_today)
    run(c, body)


def test_a_view_is_computed_once_per_board_version_and_second() -> None:
    from pipeline.web.viewcache import ViewCache

    b = LiveBoard()
    now = [1000.0]
    cache = ViewCache(b, clock=lambda: now[0])
    made: list[int] = []

    def make() -> dict[str, int]:
        made.append(b.version)
        return {"version": b.version}

    assert cache.get(("feed", "member", "handling", None), make) == b'{"version":0}'
    assert cache.get(("feed", "member", "handling", None), make) == b'{"version":0}'
    assert len(made) == 1
    b.apply_batch([("case-state", case_state("V1"), 0.0)])
    assert cache.get(("feed", "member", "handling", None), make) == b'{"version":1}'
    now[0] += 1.0                                   # due-soon and overdue move with the clock
    cache.get(("feed", "member", "handling", None), make)
    cache.get(("board",), make)
    assert len(made) == 4


def test_a_stale_view_answers_at_once_and_is_recomputed_once() -> None:
    import asyncio

    from pipeline.web.viewcache import ViewCache

    b = LiveBoard()
    now = [1000.0]
    cache = ViewCache(b, clock=lambda: now[0])
    made: list[int] = []

    def make() -> dict[str, int]:
        made.append(b.version)
        return {"version": b.version}

    async def main() -> None:
        assert cache.get(("board",), make, stale_ok=True) == b'{"version":0}'      # nothing yet: computed
        b.apply_batch([("case-state", case_state("V1"), 0.0)])
        for _ in range(5):                                                         # stale: the old view at once
            assert cache.get(("board",), make, stale_ok=True) == b'{"version":0}'
        await asyncio.sleep(0)                                                     # the one recomputation
        assert cache.get(("board",), make, stale_ok=True) == b'{"version":1}'
        now[0] += 10                                                               # too old to answer with
        b.apply_batch([("case-state", case_state("V2"), 0.0)])
        assert cache.get(("board",), make, stale_ok=True) == b'{"version":2}'

    asyncio.run(main())
    assert made == [0, 1, 2]


def test_a_team_sees_its_emergencies_however_many_overdue_cases_come_first() -> None:
    b = LiveBoard()
    b.apply_batch([("case-state", case_state(f"late-{i}", due_in=timedelta(hours=-2), priority=3), 0.0)
                   for i in range(130)] + [("case-state", case_state("fresh-p1", priority=1), 0.0),
                                           ("case-state", case_state("fresh-p2", priority=2), 0.0)])
    c = centre(b)

    async def body(client: Client) -> None:
        await sign_in(client, "hand")
        ids = [r["case_id"] for r in (await (await client.get("/api/feed")).json())["cases"]]
        assert len(ids) == 101 and ids[-1] == "fresh-p1" and "fresh-p2" not in ids
        assert all(i.startswith("late-") for i in ids[:100])
    run(c, body)


def test_a_phone_sized_photo_passes_and_an_oversized_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import os as _os

    noise = Image.frombytes("RGB", (1600, 1200), _os.urandom(1600 * 1200 * 3))
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=90)
    big = buf.getvalue()
    assert len(big) > 500_000                      # far above the JSON API's 64 KiB body limit
    monkeypatch.setenv("CITYOPS_PHOTO_MAX_BYTES", str(len(big) + 10))
    c = street_centre()

    async def body(client: Client) -> None:
        h = {"X-CSRF-Token": await sign_in(client, "hand")}
        ok = await client.post("/api/photos", data=form(big, kind="after", case_id="C-grate"), headers=h)
        assert ok.status == 201, await ok.text()
        too_big = await client.post("/api/photos", data=form(big + b"\0" * 20, kind="after", case_id="C-grate"),
                                    headers=h)
        assert too_big.status == 413 and "over the limit" in (await too_big.json())["error"]
    run(c, body)
