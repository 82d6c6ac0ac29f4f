"""Open311 against the real stack: the web server (`cityops web`) and a worker on the local Kafka broker and
ClickHouse server, each test with its own topics and database. A ticket posted in XML reaches ClickHouse through
the worker with its media link, address and attribute answers; its token answers once it is stored; a ticket
straight from the hotline topic answers with its own time; a team's acceptance shows before ClickHouse has it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest

from pipeline.config import Settings
from pipeline.web.users import User, Users, api_key_digest, write_users
from tests.support import produce
from tests.web.helpers import serving_web
from tests.web.open311_data import LAT, LON, iso

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
KEY = "live-ingest-key-0123456789abcdef"


def call(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
                                     if data is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except OSError:
        return 0, b""


@pytest.fixture
def stack(isolated_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """Topics, schema, a worker and a web server of the test's own; yields (settings, Open311 root URL)."""
    from pipeline.runtime.topics import ensure_topics
    from pipeline.sink.migrate import migrate

    s = isolated_settings
    ensure_topics(s)
    migrate(s)
    users_file = tmp_path / "users.yaml"
    write_users(users_file, Users({"gateway": User("gateway", "ingest", api_key_sha256=api_key_digest(KEY))}))
    env = {"CITYOPS_USERS": str(users_file), "CITYOPS_SECRET": "t" * 40, "CITYOPS_WEB_LOOKBACK_H": "1"}
    with serving_web(s, tmp_path, env) as base:
        yield s, base + "/open311/v2"


def until(fetch: Callable[[], tuple[int, bytes]], ok: Callable[[int, bytes], bool], timeout_s: float = 90.0) \
        -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout_s
    got = fetch()
    while not ok(*got) and time.monotonic() < deadline:
        time.sleep(0.5)
        got = fetch()
    return got


def test_tickets_through_the_worker_answer_every_field(stack: tuple[Settings, str]) -> None:
    settings, root = stack
    form = urllib.parse.urlencode({
        "api_key": KEY, "jurisdiction_id": "hongkou.sh.cn", "service_code": "E0505", "lat": LAT, "long": LON,
        "address_string": "四川北路1800号", "description": "车停在消防通道 电话13912345678",
        "media_url": "https://img.hongkou.example.cn/p/77.jpg", "attribute[PLATE_VISIBLE]": "y",
        "attribute[BLOCKING][]": "fire_lane", "first_name": "小明", "last_name": "王", "phone": "13912345678"})
    status, body = call(root + "/requests.xml", form.encode())
    assert status == 200, body
    ticket_id = ET.fromstring(body).findtext("request/service_request_id")
    assert ticket_id

    status, body = until(lambda: call(f"{root}/tokens/{ticket_id}.json"), lambda s, b: s == 200)
    assert orjson.loads(body) == [{"service_request_id": ticket_id, "token": ticket_id}]
    status, body = call(f"{root}/requests/{ticket_id}.json?extensions=true")
    (r,) = orjson.loads(body)
    assert r["media_url"] == "https://img.hongkou.example.cn/p/77.jpg" and r["address"] == "四川北路1800号"
    assert r["description"] == "车停在消防通道 电话139****5678" and "13912345678" not in body.decode()
    assert {a["code"]: a["value"] for a in r["attributes"]} == {"BLOCKING": "fire_lane", "PLATE_VISIBLE": "y"}
    assert r["status"] == "open" and r["agency_responsible"] and r["requested_datetime"]
    case_id = r["extended_attributes"]["case_id"]

    # a team accepts: the live view shows it at once
    produce(settings, settings.topics.case_updates, [(case_id.encode(), orjson.dumps({
        "case_id": case_id, "action": "accept", "team": r["agency_responsible"], "actor": "t-01",
        "at": iso(datetime.now(UTC))}))])
    status, body = until(lambda: call(f"{root}/requests/{ticket_id}.xml"),
                         lambda s, b: s == 200 and (ET.fromstring(b).findtext("request/status_notes") or "")
                         .startswith("处置中"))
    assert (ET.fromstring(body).findtext("request/status_notes") or "").startswith("处置中 accepted by")

    # a ticket straight from the hotline topic, in the contract's format, with an address only
    at = datetime.now(UTC).replace(microsecond=0)
    hotline: dict[str, Any] = {"service_request_id": "HL-LIVE-1", "requested_datetime": iso(at),
                               "service_code": "P0101", "address_string": "多伦路100号",
                               "attributes": {"COVER_PROBLEM": "missing", "FALL_RISK": "y"}}
    produce(settings, settings.topics.raw_hotline, [(b"HL-LIVE-1", orjson.dumps(hotline))])
    status, body = until(lambda: call(f"{root}/requests/HL-LIVE-1.json"),
                         lambda s, b: s == 200 and orjson.loads(b)[0]["agency_responsible"] is not None)
    (h,) = orjson.loads(body)
    assert h["requested_datetime"] == iso(at) and h["address"] == "多伦路100号" and h["lat"] and h["long"]
    found = orjson.loads(call(f"{root}/requests.json?service_code=E0505,P0101")[1])
    assert {x["service_request_id"] for x in found} == {ticket_id, "HL-LIVE-1"}
