"""Open311 requests: every field for tickets from every entry path, the search (window, status, services, ids,
pages, tickets still unlocated), live states newer than ClickHouse, the update history — on current ClickHouse
(chdb, in process) and, marked `clickhouse`, on the real 18.16 server.

Tickets are stored by the worker's own chain (tests/web/open311_data.py), so what is searched is what a worker
stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.web.archive import CaseArchive
from pipeline.web.open311_search import fetch_window, merge_page
from pipeline.web.outbox import MemoryOutbox
from tests.analytics.engines import ChdbDatabase
from tests.web.helpers import API_KEY, centre, run
from tests.web.open311_data import District, chdb_database, hours_ago, iso, ticket

Client = TestClient[Any, Any]
BASE = "/open311/v2"
FIELDS = ["service_request_id", "status", "status_notes", "service_name", "service_code", "description",
          "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
          "address", "address_id", "zipcode", "lat", "long", "media_url"]


@pytest.fixture
def db() -> Iterator[ChdbDatabase]:
    yield from chdb_database()


async def requests_of(client: Client, path: str, fmt: str = "json", **params: str) -> list[dict[str, Any]]:
    """The requests of an answer as dicts of text/None (XML read with a real parser; JSON values as text)."""
    resp = await client.get(f"{BASE}/{path}.{fmt}", params=params)
    assert resp.status == 200, await resp.text()
    if fmt == "json":
        return [{k: v for k, v in r.items()} for r in await resp.json()]
    root = ET.fromstring(await resp.read())
    assert root.tag == "service_requests"
    return [{child.tag: child for child in r} | {"_tags": [child.tag for child in r]}
            for r in root.findall("request")]


def ids_of(found: list[dict[str, Any]]) -> list[str]:
    return [r["service_request_id"] if isinstance(r["service_request_id"], str)
            else r["service_request_id"].text for r in found]


def test_every_field_for_tickets_from_every_entry_path(db: ChdbDatabase) -> None:
    """POST, the hotline topic (contract format, address only, a caller), and a replay of it: each answers all
    the spec's fields in both formats, `requested_datetime` is the ticket's own time, personal data masked."""
    c = centre(archive=CaseArchive(db))
    district = District(db.store)
    topic_at = hours_ago(3)
    topic = ticket("HL-1", topic_at, code="P0101", address_string="四川北路100号", address_id="SH-HK-0100",
                   description="井盖没了，王小明 13912345678", caller={"name": "王小明", "phone": "13912345678"},
                   attributes={"COVER_PROBLEM": "missing", "FALL_RISK": "y"}, channel="phone")

    async def body(client: Client) -> None:
        posted = await client.post(f"{BASE}/requests.json", data={
            "api_key": API_KEY, "service_code": "E0501", "lat": "31.2605", "long": "121.4838",
            "description": "占道经营 电话13812345678", "attribute[STALLS]": "4",
            "media_url": "https://img.hongkou.example.cn/p/9.jpg", "service_request_id": "WEB-1"})
        assert posted.status == 200, await posted.text()
        assert isinstance(c.outbox, MemoryOutbox)
        (_, _, raw), = c.outbox.sent
        district.tickets(raw)                       # what the worker does with it
        district.tickets(topic)
        district.tickets(topic)                     # a replay: the same ticket again
        c.apply_items(district.live_items())
        found = await requests_of(client, "requests", service_request_id="WEB-1,HL-1")
        assert ids_of(found) == ["WEB-1", "HL-1"]
        for r in found:
            assert list(r) == FIELDS
            assert r["requested_datetime"] and r["updated_datetime"] and r["status"] == "open"
            assert r["agency_responsible"] in ("enforcement", "handling", "supervision")
            assert r["status_notes"].startswith("已派遣 dispatched to ") and r["expected_datetime"]
            assert r["zipcode"] is None
        web, hotline = found
        assert web["description"] == "占道经营 电话138****5678" and web["media_url"].endswith("/p/9.jpg")
        assert (web["lat"], web["long"]) == (31.2605, 121.4838) and web["service_name"] == "无照经营游商"
        assert hotline["requested_datetime"] == iso(topic_at)
        assert hotline["address"] == "四川北路100号" and hotline["address_id"] == "SH-HK-0100"
        assert "13912345678" not in hotline["description"] and "王小明" not in hotline["description"]
        assert hotline["lat"] and hotline["long"]           # the gazetteer's point for the address
        assert hotline["service_notice"].startswith("井盖问题")
        xml = await requests_of(client, "requests/HL-1", "xml")
        assert xml[0]["_tags"] == FIELDS
        assert xml[0]["address"].text == "四川北路100号" and xml[0]["zipcode"].text is None
        assert xml[0]["requested_datetime"].text == iso(topic_at)
        again = await requests_of(client, "requests", service_request_id="HL-1,HL-1")
        assert ids_of(again) == ["HL-1"]
    run(c, body)


def test_a_ticket_an_operator_placed_keeps_its_open311_fields(db: ChdbDatabase) -> None:
    """An address the gazetteer cannot place waits in the unlocated queue with its media link, address id and
    answers; placed by an operator (the same ticket id, re-sent with a point), it is stored with all of them."""
    from pipeline.stages.decode import default_decoder
    from pipeline.web.outbox import placed_ticket

    c = centre(archive=CaseArchive(db))
    d = District(db.store)
    d.tickets(ticket("LOST-1", hours_ago(6), code="E0501", address_string="找不到的弄堂7号", address_id="HK-X-7",
                     media_url="https://img.example.cn/7.jpg", attributes={"STALLS": "5"}))
    (waiting,) = d.unlocated
    assert waiting["media_url"] == "https://img.example.cn/7.jpg" and waiting["address_id"] == "HK-X-7"
    _, raw = placed_ticket(default_decoder(), waiting, 121.4838, 31.2605)
    d.tickets(raw)

    async def body(client: Client) -> None:
        (r,) = await requests_of(client, "requests/LOST-1", extensions="true")
        assert (r["media_url"], r["address_id"], r["address"]) == ("https://img.example.cn/7.jpg", "HK-X-7",
                                                                   "找不到的弄堂7号")
        assert r["attributes"][0]["value"] == "5" and r["requested_datetime"] == iso(hours_ago(6))
        assert (r["lat"], r["long"]) == (31.2605, 121.4838)
    run(c, body)


def test_search_window_status_and_services(db: ChdbDatabase) -> None:
    """The last 90 days by default; `start_date`/`end_date` inclusive; `status` open (resolved included) or
    closed (verified and closed); `service_code` lists — the same results in both formats, newest first."""
    c = centre(archive=CaseArchive(db))
    d = District(db.store)
    d.tickets(ticket("OLD", hours_ago(24 * 100)), ticket("A", hours_ago(24 * 80), code="E0102"),
              ticket("B", hours_ago(24 * 10), code="P0118", lat=31.2705, long=121.4836),
              ticket("C", hours_ago(30), code="E0505", lat=31.2655, long=121.4862),
              ticket("D", hours_ago(20), code="E0501", lat=31.2517, long=121.4870))
    closed, resolved = d.case_of("C"), d.case_of("D")
    for case_id, team in ((closed, d.states[closed]["team"]), (resolved, d.states[resolved]["team"])):
        d.update(case_id, "accept", team, hours_ago(19))
        d.update(case_id, "resolve", team, hours_ago(18), note="已清理 cleared")
    d.update(closed, "verify", "supervision", hours_ago(17))

    async def body(client: Client) -> None:
        for fmt in ("json", "xml"):
            assert ids_of(await requests_of(client, "requests", fmt)) == ["D", "C", "B", "A"]
            assert ids_of(await requests_of(client, "requests", fmt, status="closed")) == ["C"]
            assert ids_of(await requests_of(client, "requests", fmt, status="open")) == ["D", "B", "A"]
            assert ids_of(await requests_of(client, "requests", fmt, status="open,closed")) == ["D", "C", "B", "A"]
            assert ids_of(await requests_of(client, "requests", fmt, service_code="E0505,P0118")) == ["C", "B"]
            window = {"start_date": iso(hours_ago(24 * 101)), "end_date": iso(hours_ago(24 * 11))}
            assert ids_of(await requests_of(client, "requests", fmt, **window)) == ["A", "OLD"]
            assert ids_of(await requests_of(client, "requests", fmt, start_date=iso(hours_ago(30.1)))) == ["D", "C"]
        by_id = {r["service_request_id"]: r for r in await requests_of(client, "requests")}
        assert by_id["C"]["status"] == "closed" and by_id["C"]["status_notes"].startswith("已核查结案")
        assert by_id["C"]["updated_datetime"] == iso(hours_ago(17)) and by_id["C"]["expected_datetime"] is None
        assert by_id["D"]["status"] == "open" and "awaiting verification" in by_id["D"]["status_notes"]
        assert by_id["D"]["updated_datetime"] == iso(hours_ago(18))
    run(c, body)


def test_pages_merge_unlocated_tickets_in_order(db: ChdbDatabase) -> None:
    """`page`/`page_size` walk one stable order (newest first) that also holds the tickets waiting in the
    unlocated queue; an unlocated ticket placed since (stored) is listed once."""
    c = centre(archive=CaseArchive(db))
    d = District(db.store)
    located = [ticket(f"L{i}", hours_ago(2 * i + 1), lat=31.2605 + 0.003 * i) for i in range(6)]
    lost = [ticket(f"U{i}", hours_ago(2 * i + 2), address_string=f"不存在的路{i}号") for i in range(3)]
    d.tickets(*located, *lost)
    assert len(d.unlocated) == 3
    c.apply_items(d.live_items())
    order = ["L0", "U0", "L1", "U1", "L2", "U2", "L3", "L4", "L5"]

    async def body(client: Client) -> None:
        pages = [ids_of(await requests_of(client, "requests", "xml", page=str(p), page_size="4")) for p in (1, 2, 3)]
        assert pages == [order[:4], order[4:8], order[8:]]
        assert ids_of(await requests_of(client, "requests", page="4", page_size="4")) == []
        assert ids_of(await requests_of(client, "requests", status="closed")) == []
        u1 = (await requests_of(client, "requests/U1"))[0]
        assert u1["status"] == "open" and "placed on the map" in u1["status_notes"] and u1["lat"] is None
        assert u1["address"] == "不存在的路1号"
        d.tickets(ticket("U1", hours_ago(4), lat=31.2705, long=121.4836))     # an operator placed it
        assert ids_of(await requests_of(client, "requests")).count("U1") == 1
    run(c, body)


def test_a_live_state_newer_than_clickhouse_wins(db: ChdbDatabase) -> None:
    """A ticket accepted a moment ago shows `accepted` before ClickHouse has the change; a case verified a moment
    ago is found by `status=closed` and not by `status=open`."""
    c = centre(archive=CaseArchive(db))
    d = District(db.store)
    d.tickets(ticket("LIVE-1", hours_ago(2)))
    case_id = d.case_of("LIVE-1")
    state = d.states[case_id]
    now = datetime.now(UTC).timestamp()

    async def body(client: Client) -> None:
        (before,) = await requests_of(client, "requests/LIVE-1")
        assert before["status_notes"].startswith("已派遣")
        c.apply_items([("case-state", state | {"status": "accepted", "revision": state["revision"] + 1}, now)])
        (after,) = await requests_of(client, "requests/LIVE-1")
        assert after["status_notes"] == f"处置中 accepted by {state['team']}"
        c.apply_items([("case-state", state | {"status": "closed", "revision": state["revision"] + 3,
                                               "closed_at": iso(hours_ago(0.5))}, now)])
        assert ids_of(await requests_of(client, "requests", status="closed")) == ["LIVE-1"]
        assert ids_of(await requests_of(client, "requests", "xml", status="open")) == []
        (closed,) = await requests_of(client, "requests/LIVE-1")
        assert closed["status"] == "closed" and closed["updated_datetime"] == iso(hours_ago(0.5))
    run(c, body)


def test_extensions_add_the_update_history_and_the_answers(db: ChdbDatabase) -> None:
    """`extensions=true`: `notes` (received, then each step, with the team's own words), `attributes` (the
    service's questions and the answers) and `extended_attributes` (the case), in both formats."""
    c = centre(archive=CaseArchive(db))
    d = District(db.store)
    d.tickets(ticket("EXT-1", hours_ago(5), attributes={"STALLS": "2", "GOODS": ["food", "fruit"]}))
    case_id = d.case_of("EXT-1")
    team = d.states[case_id]["team"]
    d.update(case_id, "accept", team, hours_ago(4))
    d.update(case_id, "resolve", team, hours_ago(3), note="摊贩已劝离 vendors moved on, 电话13912345678")

    async def body(client: Client) -> None:
        (r,) = await requests_of(client, "requests/EXT-1", extensions="true")
        assert [n["type"] for n in r["notes"]] == ["submitted", "new", "dispatched", "accepted", "resolved"]
        assert r["notes"][-1]["description"].startswith("已处置待核查") and "vendors moved on" in \
            r["notes"][-1]["description"] and "13912345678" not in orjson.dumps(r).decode()
        assert r["notes"][0]["datetime"] == r["requested_datetime"]
        assert r["attributes"] == [{"code": "GOODS", "description": "卖什么？ What do they sell?",
                                    "value": "food,fruit"},
                                   {"code": "STALLS", "description": "有几个摊位？ How many stalls?", "value": "2"}]
        assert r["extended_attributes"] == {"case_id": case_id, "case_status": "resolved"}
        (x,) = await requests_of(client, "requests", "xml", service_request_id="EXT-1", extensions="true")
        assert [n.findtext("type") for n in x["notes"].findall("note")] == [n["type"] for n in r["notes"]]
        assert x["extended_attributes"].findtext("case_id") == case_id
        (plain,) = await requests_of(client, "requests/EXT-1")
        assert "notes" not in plain
    run(c, body)


@pytest.mark.parametrize(("query", "reason"), [
    ("start_date=2026-01-01T00:00:00Z&end_date=2026-05-01T00:00:00Z", "start_date/end_date: at most 90 days"),
    ("start_date=2026-05-01T00:00:00Z&end_date=2026-01-01T00:00:00Z", "end_date: before start_date"),
    ("start_date=yesterday", "start_date: not a W3C date-time"),
    ("start_date=2026-01-01T00:00:00", "start_date: a time needs its offset"),
    ("status=pending", "status: 'pending' is not open or closed"),
    ("service_code=E0501,X1", "service_code: 'X1' is not a service"),
    ("page=0", "page: a whole number from 1"),
    ("page_size=1001", "page_size: a whole number from 1 to 1000"),
    ("extensions=maybe", "extensions: true or false"),
])
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_search_refuses_what_the_spec_does_not_allow(query: str, reason: str, fmt: str) -> None:
    """A window over 90 days, an unknown status or service, a page out of range: a 400 naming the parameter."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.get(f"{BASE}/requests.{fmt}?{query}")
        assert resp.status == 400
        data = await resp.read()
        description = (ET.fromstring(data).findtext("error/description") if fmt == "xml"
                       else orjson.loads(data)[0]["description"])
        assert description is not None and description.startswith(reason), description
    run(c, body)


def test_a_date_is_a_shanghai_day_and_one_bound_makes_90_days() -> None:
    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.web.open311_search import parse_search

    now = datetime(2026, 6, 1, tzinfo=UTC)
    s = parse_search({"start_date": "2026-05-01"}, now, default_taxonomy())
    assert s.start == datetime(2026, 4, 30, 16, tzinfo=UTC) and s.end - s.start == timedelta(days=90)
    s = parse_search({"end_date": "2026-05-01T08:00:00+08:00"}, now, default_taxonomy())
    assert s.end == datetime(2026, 5, 1, tzinfo=UTC) and s.end - s.start == timedelta(days=90)
    s = parse_search({}, now, default_taxonomy())
    assert (s.start, s.end, s.page, s.page_size) == (now - timedelta(days=90), now, 1, 1000)


@settings(max_examples=400, deadline=None)
@given(stored=st.sets(st.integers(0, 200), max_size=40), extra=st.sets(st.integers(201, 400), max_size=8),
       shift=st.integers(0, 400), skip=st.integers(0, 60), size=st.integers(1, 10))
def test_merging_memory_tickets_into_a_page_is_exact(stored: set[int], extra: set[int], shift: int, skip: int,
                                                     size: int) -> None:
    """Whatever the interleaving, the merged page is the page of the merged order, from one stored fetch."""
    extra_keys = {(e + shift) % 401 for e in extra} - stored
    all_stored, all_extra = sorted(stored), sorted(extra_keys)
    offset, limit = fetch_window(skip, size, len(all_extra))
    fetched = all_stored[offset:offset + limit]
    page = merge_page([((float(k), ""), k) for k in fetched], offset, len(fetched) < limit,
                      [((float(k), ""), k) for k in all_extra], skip, size)
    assert page == sorted(all_stored + all_extra)[skip:skip + size]


@pytest.mark.clickhouse
def test_the_search_on_clickhouse_18(isolated_settings: Settings) -> None:
    """The same searches on the real server (ClickHouse 18.16 here): window, status with a live override,
    services, pages, ids, history."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    migrate(isolated_settings)
    sink = ClickHouseSink(isolated_settings)
    d = District(sink.write)
    d.tickets(*[ticket(f"S{i}", hours_ago(3 * i + 1), lat=31.2605 + 0.003 * i) for i in range(5)],
              ticket("P", hours_ago(2), code="P0118", lat=31.2705, long=121.4836, media_url="http://x.example/p"))
    case_id = d.case_of("S1")
    team = d.states[case_id]["team"]
    d.update(case_id, "accept", team, hours_ago(1))
    d.update(case_id, "resolve", team, hours_ago(0.5), note="done")
    d.update(case_id, "verify", "supervision", hours_ago(0.25))
    c = centre(archive=CaseArchive(ClickHouse(isolated_settings)))

    async def body(client: Client) -> None:
        assert ids_of(await requests_of(client, "requests")) == ["S0", "P", "S1", "S2", "S3", "S4"]
        assert ids_of(await requests_of(client, "requests", "xml", status="closed")) == ["S1"]
        assert ids_of(await requests_of(client, "requests", service_code="P0118")) == ["P"]
        assert ids_of(await requests_of(client, "requests", page="2", page_size="4")) == ["S3", "S4"]
        state = d.states[d.case_of("S0")]
        c.apply_items([("case-state", state | {"status": "closed", "revision": state["revision"] + 5},
                        datetime.now(UTC).timestamp())])
        assert ids_of(await requests_of(client, "requests", status="closed")) == ["S0", "S1"]
        (p,) = await requests_of(client, "requests/P", extensions="true")
        assert p["media_url"] == "http://x.example/p" and [n["type"] for n in p["notes"]] == [
            "submitted", "new", "dispatched"]
        (s1,) = await requests_of(client, "requests/S1", "xml", extensions="true")
        assert s1["status"].text == "closed" and s1["notes"].findall("note")[-1].findtext("type") == "closed"
    run(c, body)
    sink.close()
