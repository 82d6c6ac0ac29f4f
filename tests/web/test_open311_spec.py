"""The GeoReport v2 specification's own example requests, sent to this server in both formats, and its example
answers' shapes (element names, nesting, list wrappers, field order) checked with a real XML parser. Every XML
answer also converts to its JSON answer by the spec's XML-to-JSON mapping (the "Spark convention"), so the two
formats carry the same data.

The spec's examples are written for `api.city.gov` (jurisdiction `city.gov`, service `001`); here they are sent
with this district's jurisdiction and services (a sinkhole is E0401 路面塌陷), and once as written, which a
server for another jurisdiction must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from aiohttp.test_utils import TestClient

from pipeline.web.archive import CaseArchive
from pipeline.web.open311_doc import ITEM_OF
from pipeline.web.outbox import MemoryOutbox
from tests.analytics.engines import ChdbDatabase
from tests.web.helpers import API_KEY, centre, run
from tests.web.open311_data import District, chdb_database, hours_ago, iso, ticket

Client = TestClient[Any, Any]
BASE = "/open311/v2"
J = "hongkou.sh.cn"
# the spec's response fields, in its order
SERVICE = ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"]
ATTRIBUTE = ["variable", "code", "datatype", "required", "datatype_description", "order", "description", "values"]
REQUEST = ["service_request_id", "status", "status_notes", "service_name", "service_code", "description",
           "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
           "address", "address_id", "zipcode", "lat", "long", "media_url"]
# the spec's example POST (form-encoded), with this district's service, place and attributes
EXAMPLE_POST = (f"api_key={API_KEY}&jurisdiction_id={J}&service_code=E0401&lat=31.26524078&long=121.4842043"
                "&address_string=1234+5th+street&email=smit333%40sfgov.edu&device_id=tt222111&account_id=123456"
                "&first_name=john&last_name=smith&phone=111111111&description=A+large+sinkhole+is+destroying+the"
                "+street&media_url=http%3A%2F%2Ffarm3.static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg"
                "&attribute[HOLE_SIZE]=large&attribute[TRAFFIC_BLOCKED]=y")


def spark(element: ET.Element) -> Any:
    """An XML element as JSON by the spec's mapping: a list wrapper is an array, an element with children an
    object, a leaf its text."""
    if element.tag in ITEM_OF:
        return [spark(child) for child in element]
    if len(element):
        return {child.tag: spark(child) for child in element}
    return element.text


def as_text(value: Any) -> Any:
    """JSON values as XML writes them (the XML side has no types): for comparing the two formats."""
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        return None
    return str(value)


async def both(client: Client, method: str, path: str, **kw: Any) -> tuple[int, ET.Element, Any]:
    """The same request in XML and JSON: (status, XML root, JSON), after checking that both formats agree."""
    xml = await client.request(method, f"{BASE}/{path}.xml" if not path.startswith("/") else f"{path}.xml", **kw)
    js = await client.request(method, f"{BASE}/{path}.json" if not path.startswith("/") else f"{path}.json", **kw)
    assert xml.status == js.status
    assert xml.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert js.headers["Content-Type"] == "application/json; charset=utf-8"
    raw = await xml.read()
    assert raw.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(raw)
    data = orjson.loads(await js.read())
    if method == "GET":
        assert spark(root) == as_text(data), path
    return xml.status, root, data


@pytest.fixture
def db() -> Iterator[ChdbDatabase]:
    yield from chdb_database()


def test_get_service_list(db: ChdbDatabase) -> None:
    """`GET services.xml?jurisdiction_id=...`: `<services>` of `<service>` with the spec's seven fields."""
    async def body(client: Client) -> None:
        status, root, data = await both(client, "GET", "services", params={"jurisdiction_id": J})
        assert status == 200 and root.tag == "services"
        assert {child.tag for child in root} == {"service"}
        for service in root:
            assert [e.tag for e in service] == SERVICE
            assert service.findtext("metadata") in ("true", "false")
            assert service.findtext("type") in ("realtime", "batch", "blackbox")
        assert isinstance(data, list) and all(list(s) == SERVICE for s in data)
    run(centre(archive=CaseArchive(db)), body)


def test_get_service_definition() -> None:
    """`GET services/{code}.xml`: `<service_definition>` with `<service_code>` and `<attributes>` of
    `<attribute>`s, each with `<values>` of `<value>` (key, name)."""
    async def body(client: Client) -> None:
        status, root, data = await both(client, "GET", "services/E0505", params={"jurisdiction_id": J})
        assert status == 200 and root.tag == "service_definition"
        assert [e.tag for e in root] == ["service_code", "attributes"]
        attributes = root.findall("attributes/attribute")
        assert attributes and all([e.tag for e in a] == ATTRIBUTE for a in attributes)
        assert [v.tag for v in attributes[0].find("values") or []] == ["value", "value"]
        assert [e.tag for e in attributes[0].findall("values/value")[0]] == ["key", "name"]
        assert data["attributes"][0]["values"] == [{"key": "y", "name": "是 yes"}, {"key": "n", "name": "否 no"}]
    run(centre(), body)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_post_service_request_as_in_the_spec(fmt: str) -> None:
    """The spec's example POST: answered `<service_requests><request>` with `service_request_id`,
    `service_notice` and an empty `account_id`; email, device_id and account_id are not kept."""
    c = centre()

    async def body(client: Client) -> None:
        resp = await client.post(f"{BASE}/requests.{fmt}", data=EXAMPLE_POST.encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        assert resp.status == 200, await resp.text()
        if fmt == "xml":
            root = ET.fromstring(await resp.read())
            assert root.tag == "service_requests"
            (request,) = root
            assert [e.tag for e in request] == ["service_request_id", "service_notice", "account_id"]
            assert request.findtext("account_id") == "" and request.findtext("service_request_id")
        else:
            (answer,) = await resp.json()
            assert list(answer) == ["service_request_id", "service_notice", "account_id"]
            assert answer["account_id"] is None
        assert isinstance(c.outbox, MemoryOutbox)
        (_, _, raw), = c.outbox.sent
        msg = orjson.loads(raw)
        assert msg["attributes"] == {"HOLE_SIZE": "large", "TRAFFIC_BLOCKED": "y"}
        assert msg["media_url"] == "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg"
        assert msg["address_string"] == "1234 5th street" and msg["caller"] == {"name": "smith john",
                                                                                 "phone": "111111111"}
        assert not {"email", "device_id", "account_id", "api_key", "jurisdiction_id"} & set(msg)
    run(c, body)


def test_get_requests_and_a_request_and_a_token(db: ChdbDatabase) -> None:
    """`GET requests.xml?start_date=...&end_date=...&status=open&jurisdiction_id=...`, `GET requests/{id}.xml`,
    `GET tokens/{token}.xml`: `<service_requests>` of `<request>` with the spec's fields in its order."""
    District(db.store).tickets(ticket("638344", hours_ago(3), code="E0401", address_string="四川北路1号",
                                      attributes={"HOLE_SIZE": "small", "TRAFFIC_BLOCKED": "n"},
                                      media_url="http://city.gov.s3.amazonaws.com/requests/media/638344.jpg"),
                               ticket("638349", hours_ago(2), code="E0401", lat=31.2705, long=121.4836,
                                      attributes={"HOLE_SIZE": "large", "TRAFFIC_BLOCKED": "y"}))

    async def body(client: Client) -> None:
        query = {"start_date": iso(hours_ago(24)), "end_date": iso(hours_ago(0)), "status": "open",
                 "jurisdiction_id": J}
        status, root, data = await both(client, "GET", "requests", params=query)
        assert status == 200 and root.tag == "service_requests"
        assert [r.findtext("service_request_id") for r in root] == ["638349", "638344"]
        assert all([e.tag for e in r] == REQUEST for r in root)
        assert all(list(r) == REQUEST for r in data)
        status, root, data = await both(client, "GET", "requests/638344", params={"jurisdiction_id": J})
        assert status == 200 and [e.tag for e in root.find("request") or []] == REQUEST
        assert data[0]["media_url"] == "http://city.gov.s3.amazonaws.com/requests/media/638344.jpg"
        status, root, data = await both(client, "GET", "tokens/638344", params={"jurisdiction_id": J})
        assert status == 200 and [e.tag for e in root.find("request") or []] == ["service_request_id", "token"]
        assert data == [{"service_request_id": "638344", "token": "638344"}]
    run(centre(archive=CaseArchive(db)), body)


def test_errors_as_in_the_spec() -> None:
    """An invalid api_key: HTTP 403 and `<errors><error><code>403</code><description>...`; the spec's examples
    as written (jurisdiction `city.gov`) are refused by this district's server with a 400, in both formats."""
    async def body(client: Client) -> None:
        for fmt in ("xml", "json"):
            resp = await client.post(f"{BASE}/requests.{fmt}", data=EXAMPLE_POST.replace(API_KEY, "xyz").encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert resp.status == 403
            raw = await resp.read()
            if fmt == "xml":
                root = ET.fromstring(raw)
                assert root.tag == "errors" and [e.tag for e in root.find("error") or []] == ["code", "description"]
                assert root.findtext("error/code") == "403"
            else:
                assert orjson.loads(raw)[0]["code"] == 403
        for path in ("services", "services/033", "requests", "requests/123456", "tokens/123456"):
            status, root, data = await both(client, "GET", path, params={"jurisdiction_id": "city.gov"})
            assert status == 400 and root.tag == "errors" and data[0]["code"] == 400, path
        spec_post = EXAMPLE_POST.replace(f"jurisdiction_id={J}", "jurisdiction_id=city.gov")
        resp = await client.post(f"{BASE}/requests.xml", data=spec_post.encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 400 and "jurisdiction_id" in (ET.fromstring(await resp.read()).findtext(
            "error/description") or "")
    run(centre(), body)


def test_service_discovery_as_in_the_spec() -> None:
    """`discovery.xml` and `discovery.json`: changeset, contact, key_service, and `<endpoints>` of `<endpoint>`
    (specification, url, changeset, type, `<formats>` of `<format>`)."""
    async def body(client: Client) -> None:
        status, root, data = await both(client, "GET", "/open311/discovery")
        assert status == 200 and root.tag == "discovery"
        endpoint = root.find("endpoints/endpoint")
        assert endpoint is not None
        assert [e.tag for e in endpoint] == ["specification", "url", "changeset", "type", "formats"]
        assert endpoint.findtext("specification") == "http://wiki.open311.org/GeoReport_v2"
        assert data["endpoints"][0]["formats"] == ["text/xml", "application/json"]
    run(centre(), body)
