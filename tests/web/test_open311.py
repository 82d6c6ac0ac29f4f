"""The Open311 API's methods in both formats: services and definitions, POST with its checks, tokens, discovery,
jurisdiction, every error status, and no personal data in answers. (Search and request fields:
test_open311_requests.py; the spec's own examples: test_open311_spec.py; a client library: test_open311_client.py.)
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pipeline.model.taxonomy import default_taxonomy
from pipeline.stages.decode import default_decoder
from pipeline.stages.fields import MAX_MESSAGE_BYTES
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.ratelimit import RateLimiter
from tests.web.helpers import API_KEY, centre, run

Client = TestClient[Any, Any]
BASE = "/open311/v2"
TICKET = {"api_key": API_KEY, "service_code": "E0501", "lat": "31.265", "long": "121.4905",
          "description": "有人占道经营，电话13912345678", "first_name": "小明", "last_name": "王",
          "phone": "13912345678", "email": "wang@example.com", "attribute[STALLS]": "2"}


async def errors_of(resp: Any, fmt: str) -> list[tuple[int, str]]:
    """(code, description) of an Open311 error answer, read in its format (XML with a real parser)."""
    body = await resp.read()
    if fmt == "xml":
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        root = ET.fromstring(body)
        assert root.tag == "errors"
        return [(int(e.findtext("code") or 0), e.findtext("description") or "") for e in root.findall("error")]
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    return [(e["code"], e["description"]) for e in orjson.loads(body)]


def sent(c: Any) -> list[tuple[str, str, bytes]]:
    assert isinstance(c.outbox, MemoryOutbox)
    return c.outbox.sent


def test_services_list_the_taxonomy_in_both_formats() -> None:
    """Every category is a realtime service; those with attributes say `metadata: true`; XML has the spec's
    `<services><service>` with the same fields."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.get(f"{BASE}/services.json")
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
        services = await resp.json()
        assert [s["service_code"] for s in services] == default_taxonomy().codes()
        by_code = {s["service_code"]: s for s in services}
        assert by_code["E0501"]["metadata"] is True and by_code["P0101"]["metadata"] is True
        assert by_code["E0102"]["metadata"] is False
        assert all(s["type"] == "realtime" for s in services)
        assert by_code["E0501"]["group"] == "E05 街面秩序" and by_code["E0501"]["service_name"] == "无照经营游商"
        xml = await client.get(f"{BASE}/services.xml")
        assert xml.status == 200 and xml.headers["Content-Type"] == "text/xml; charset=utf-8"
        root = ET.fromstring(await xml.read())
        assert root.tag == "services"
        items = root.findall("service")
        assert [s.findtext("service_code") for s in items] == default_taxonomy().codes()
        first = items[0]
        assert [e.tag for e in first] == ["service_code", "service_name", "description", "metadata", "type",
                                          "keywords", "group"]
        assert {s.findtext("service_code"): s.findtext("metadata") for s in items}["E0501"] == "true"
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_service_definition_lists_the_attributes(fmt: str) -> None:
    """A definition has the spec's attribute fields in order, values as key/name; an unknown code is a 404."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.get(f"{BASE}/services/E0501.{fmt}")
        assert resp.status == 200
        if fmt == "json":
            doc = await resp.json()
            assert doc["service_code"] == "E0501"
            stalls, goods = doc["attributes"]
            assert (stalls["code"], stalls["datatype"], stalls["required"], stalls["order"]) == \
                ("STALLS", "number", True, 1)
            assert goods["datatype"] == "multivaluelist" and goods["required"] is False
            assert {v["key"] for v in goods["values"]} == {"food", "fruit", "clothes", "other"}
        else:
            root = ET.fromstring(await resp.read())
            assert root.tag == "service_definition" and root.findtext("service_code") == "E0501"
            attrs = root.findall("attributes/attribute")
            assert [e.tag for e in attrs[0]] == ["variable", "code", "datatype", "required",
                                                 "datatype_description", "order", "description", "values"]
            assert attrs[1].findtext("code") == "GOODS"
            assert [v.findtext("key") for v in attrs[1].findall("values/value")] == ["food", "fruit", "clothes",
                                                                                   "other"]
        plain = await client.get(f"{BASE}/services/E0102.{fmt}")
        assert plain.status == 200
        missing = await client.get(f"{BASE}/services/X9999.{fmt}")
        assert missing.status == 404
        assert (await errors_of(missing, fmt))[0][0] == 404
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_writes_a_valid_ticket_without_clear_personal_data_in_the_answer(fmt: str) -> None:
    """A form POST goes to the hotline topic as a ticket the worker's decoder accepts; the answer is its id and
    the service's notice, in the format asked for."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.{fmt}", data=TICKET)
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        assert "13912345678" not in text and "王小明" not in text
        if fmt == "json":
            answer = orjson.loads(text)[0]
            ticket_id = answer["service_request_id"]
            assert answer["account_id"] is None and "enforcement squad" in answer["service_notice"]
        else:
            root = ET.fromstring(text.encode())
            assert root.tag == "service_requests"
            request = root.find("request")
            assert request is not None and [e.tag for e in request] == ["service_request_id", "service_notice",
                                                                        "account_id"]
            ticket_id = request.findtext("service_request_id") or ""
        (topic, key, raw), = sent(c)
        assert topic == c.settings.topics.raw_hotline and key == ticket_id
        event = default_decoder().hotline(raw)          # the worker accepts it
        assert event.event_id == f"hotline:{ticket_id}" and event.category == "E0501"
        msg = orjson.loads(raw)
        assert msg["caller"] == {"name": "王 小明", "phone": "13912345678"}      # to the worker only
        assert msg["attributes"] == {"STALLS": "2"}
        assert "email" not in raw.decode()
        status = await client.get(f"{BASE}/requests/{ticket_id}.{fmt}")
        assert status.status == 200
        assert "13912345678" not in await status.text()
    run(c, body)


def test_post_json_with_the_hotline_ticket_number_and_header_key() -> None:
    """A JSON body may carry the hotline's own ticket number and the attribute answers as an object."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.json", headers={"X-Api-Key": API_KEY},
                                 json={"service_request_id": "HK-2026-001", "service_code": "P0101",
                                       "address_string": "虹口区四川北路1号", "address_id": "HK-ADDR-0001",
                                       "attribute": {"COVER_PROBLEM": "missing", "FALL_RISK": "y"}})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())[0]["service_request_id"] == "HK-2026-001"
        msg = orjson.loads(sent(c)[0][2])
        assert msg["attributes"] == {"COVER_PROBLEM": "missing", "FALL_RISK": "y"}
        assert msg["address_id"] == "HK-ADDR-0001"
    run(c, body)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"attribute[STALLS]": ""}, "attribute[STALLS]: required"),
    ({"attribute[STALLS]": "many"}, "attribute[STALLS]: must be a number"),
    ({"attribute[STALLS]": "500"}, "attribute[STALLS]: 500 is above the largest accepted value 200"),
    ({"attribute[GOODS]": "cars"}, "attribute[GOODS]: 'cars' is not one of"),
    ({"attribute[PLATE_VISIBLE]": "y"}, "attribute[PLATE_VISIBLE]: not an attribute of service E0501"),
    ({"attribute[STALLS][x]": "1"}, "attribute[STALLS][x]: not attribute[CODE]"),
    ({"media_url": "javascript:alert(1)"}, "media_url: must be an http or https URL"),
    ({"media_url": "ftp://example.org/a.jpg"}, "media_url: must be an http or https URL"),
    ({"media_url": "https://"}, "media_url: must be an http or https URL"),
    ({"jurisdiction_id": "city.gov"}, "jurisdiction_id: 'city.gov' is not served here"),
])
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_refuses_what_the_service_does_not_take(fields: dict[str, str], reason: str, fmt: str) -> None:
    """Attributes are checked against the service's definition (the 400 names the attribute), media_url must be
    an http(s) URL, jurisdiction_id must be this one; nothing is sent."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.{fmt}", data={**TICKET, **fields})
        assert resp.status == 400
        (code, description), = await errors_of(resp, fmt)
        assert code == 400 and description.startswith(reason), description
        assert sent(c) == []
    run(c, body)


def test_attributes_travel_with_the_ticket() -> None:
    """Several values of a multivaluelist (`attribute[GOODS][]`), numbers normalized, media_url and the
    jurisdiction accepted: all in the queued ticket."""
    c = centre()

    async def body(client: Client) -> None:
        base = [(k, v) for k, v in TICKET.items() if k != "attribute[STALLS]"]
        form = [*base, ("attribute[STALLS]", "3.0"), ("attribute[GOODS][]", "food"),
                ("attribute[GOODS][]", "fruit"), ("media_url", "https://img.hongkou.example.cn/p/1.jpg"),
                ("jurisdiction_id", "hongkou.sh.cn")]
        resp = await client.post(f"{BASE}/requests.xml", data=form)
        assert resp.status == 200, await resp.text()
        msg = orjson.loads(sent(c)[0][2])
        assert msg["attributes"] == {"STALLS": "3", "GOODS": ["food", "fruit"]}
        assert msg["media_url"] == "https://img.hongkou.example.cn/p/1.jpg"
        twice = await client.post(f"{BASE}/requests.json", data=[*TICKET.items(), ("attribute[GOODS][]", "food"),
                                                                 ("attribute[GOODS][]", "food")])
        assert twice.status == 400 and "given twice" in (await errors_of(twice, "json"))[0][1]
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_jurisdiction_id_is_optional_and_checked_on_every_method(fmt: str) -> None:
    """Absent or empty: served. This district's: served. Another: a 400 naming it, on every GET."""
    c = centre()

    async def body(client: Client) -> None:
        for path in ("services", "services/E0501", "requests", "requests/NOPE", "tokens/NOPE"):
            good = await client.get(f"{BASE}/{path}.{fmt}", params={"jurisdiction_id": "hongkou.sh.cn"})
            assert good.status in (200, 404), path
            empty = await client.get(f"{BASE}/{path}.{fmt}?jurisdiction_id=")
            assert empty.status == good.status, path
            wrong = await client.get(f"{BASE}/{path}.{fmt}", params={"jurisdiction_id": "sfgov.org"})
            assert wrong.status == 400, path
            assert "jurisdiction_id" in (await errors_of(wrong, fmt))[0][1]
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_error_statuses(fmt: str) -> None:
    """400 with the decoder's reason, 401 without a key, 403 with a wrong one, 404 unknown, 413 too large —
    the same codes and reasons in both formats."""
    c = centre()
    url = f"{BASE}/requests.{fmt}"

    async def body(client: Client) -> None:
        async def reason(resp: Any, status: int) -> str:
            assert resp.status == status
            (code, description), = await errors_of(resp, fmt)
            assert code == status and description.strip()
            return description

        assert (await reason(await client.post(url, data={**TICKET, "service_code": "X1"}), 400)).startswith(
            "service_code: unknown category code")
        no_place = {k: v for k, v in TICKET.items() if k not in ("lat", "long")}
        assert await reason(await client.post(url, data=no_place), 400) == \
            "location: neither lat/long nor address_string given"
        assert "swapped" in await reason(await client.post(url, data={**TICKET, "lat": "121.49", "long": "31.26"}),
                                         400)
        assert (await reason(await client.post(url, data={**TICKET, "lat": "north"}), 400)).startswith(
            "lat: must be a number")
        await reason(await client.post(url, data=b"{not json", headers={"Content-Type": "application/json",
                                                                        "X-Api-Key": API_KEY}), 400)
        await reason(await client.post(url, data={k: v for k, v in TICKET.items() if k != "api_key"}), 401)
        await reason(await client.post(url, data={**TICKET, "api_key": "nope"}), 403)
        await reason(await client.post(url, data={**TICKET, "description": "x" * MAX_MESSAGE_BYTES}), 413)
        await reason(await client.get(f"{BASE}/requests/NOPE-1.{fmt}"), 404)
        await reason(await client.get(f"{BASE}/tokens/NOPE-1.{fmt}"), 404)
        await reason(await client.get(f"{BASE}/requests.{fmt}?page_size=5000"), 400)
        await reason(await client.get(f"{BASE}/nothing-here.{fmt}"), 404)
        assert "PUT" in await reason(await client.put(f"{BASE}/services.{fmt}"), 405)
        assert sent(c) == []
    run(c, body)


def test_rate_limit_answers_429_with_retry_after() -> None:
    """A client past its burst is told to wait, in the format it asked for."""
    clock = [0.0]
    c = centre(limiter=RateLimiter(rate=1.0, burst=3.0, clock=lambda: clock[0]))

    async def body(client: Client) -> None:
        statuses = [(await client.get(f"{BASE}/services.json")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get(f"{BASE}/services.xml")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert (await errors_of(limited, "xml"))[0][0] == 429
        clock[0] += 2.0
        assert (await client.get(f"{BASE}/services.json")).status == 200
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_kafka_down_answers_503(fmt: str) -> None:
    c = centre()
    assert isinstance(c.outbox, MemoryOutbox)
    c.outbox.fail = ConnectionError("broker down")

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.{fmt}", data=TICKET)
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        assert (await errors_of(resp, fmt))[0][0] == 503
    run(c, body)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_discovery_names_the_endpoint_formats_and_spec(fmt: str) -> None:
    """`/open311/discovery.{fmt}`: changeset, contact, key service and the GeoReport v2 endpoint."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.get(f"/open311/discovery.{fmt}")
        assert resp.status == 200
        if fmt == "json":
            doc = await resp.json()
            endpoint, = doc["endpoints"]
            assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
            assert endpoint["url"].endswith("/open311/v2") and endpoint["formats"] == ["text/xml",
                                                                                       "application/json"]
            assert doc["changeset"] and doc["contact"] and doc["key_service"]
        else:
            root = ET.fromstring(await resp.read())
            assert [e.tag for e in root] == ["changeset", "contact", "key_service", "endpoints"]
            endpoint_el = root.find("endpoints/endpoint")
            assert endpoint_el is not None
            assert [f.text for f in endpoint_el.findall("formats/format")] == ["text/xml", "application/json"]
            assert endpoint_el.findtext("type") == "test"
    run(c, body)


def test_tokens_answer_the_id_once_the_ticket_is_stored() -> None:
    """POST answers the id at once (realtime); `tokens/{id}` says "not stored yet" until the worker stored it,
    then answers `service_request_id` and `token` — here the ticket is in the unlocated queue, stored there."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.json", data={**TICKET, "service_request_id": "TOK-1"})
        assert resp.status == 200
        early = await client.get(f"{BASE}/tokens/TOK-1.xml")
        assert early.status == 404 and "not stored yet" in (await errors_of(early, "xml"))[0][1]
        c.board.apply_batch([("unlocated", {"event_id": "hotline:TOK-1", "category": "E0501",
                                            "occurred_at": 1.8e9}, 0.0)])
        later = await client.get(f"{BASE}/tokens/TOK-1.xml")
        assert later.status == 200
        request = ET.fromstring(await later.read()).find("request")
        assert request is not None
        assert (request.findtext("service_request_id"), request.findtext("token")) == ("TOK-1", "TOK-1")
    run(c, body)
