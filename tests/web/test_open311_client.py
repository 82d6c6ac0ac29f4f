"""A GeoReport v2 client library from PyPI that nobody on this project wrote — `georeport` (requests + xmltodict)
— against this server on a real socket, for every read method in both of its output formats: the service list, a
service definition, a search (window, status, service codes, ids) and a single request; and a refused
jurisdiction reaches it as an HTTP error. (The library does not post requests; POST is covered by
test_open311_spec.py with the spec's own example.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from aiohttp import web
from georeport import GeoReport

from pipeline.web.app import build_app
from pipeline.web.archive import CaseArchive
from pipeline.web.centre import Centre
from tests.web.helpers import centre
from tests.web.open311_data import District, chdb_database, hours_ago, iso, ticket

JURISDICTION = "hongkou.sh.cn"


@contextmanager
def serving(c: Centre) -> Iterator[str]:
    """The app on 127.0.0.1 (a free port) in a thread of its own; yields the Open311 root URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(c, start_background=False))
    ready = threading.Event()
    port: list[int] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}/open311/v2"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    """A server whose ClickHouse (chdb) holds three stored tickets and whose live view has one unlocated."""
    for db in chdb_database():
        d = District(db.store)
        d.tickets(ticket("GR-1", hours_ago(5), attributes={"STALLS": "2"}, description="占道经营",
                         media_url="https://img.example.cn/1.jpg"),
                  ticket("GR-2", hours_ago(4), code="P0118", lat=31.2705, long=121.4836,
                         attributes={"LIGHT_PROBLEM": "dark"}),
                  ticket("GR-3", hours_ago(3), code="E0501", lat=31.2517, long=121.4870, attributes={"STALLS": "1"}),
                  ticket("GR-U", hours_ago(2), code="E0102", address_string="无名路1号"))
        c = centre(archive=CaseArchive(db))
        c.apply_items(d.live_items())
        with serving(c) as url:
            yield url


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_service_list_and_definition(root: str, fmt: str) -> None:
    client = GeoReport(root, jurisdiction=JURISDICTION, output_format=fmt)
    services = client.get_service_list()
    codes = [s["service_code"] for s in services]
    assert "E0501" in codes and len(codes) == len(set(codes)) > 100
    vendors = next(s for s in services if s["service_code"] == "E0501")
    assert str(vendors["metadata"]).lower() == "true" and vendors["type"] == "realtime"
    definition = client.get_service_definition("E0501")
    assert definition["service_code"] == "E0501"
    attributes = definition["attributes"] if fmt == "json" else definition["attributes"]["attribute"]
    assert [a["code"] for a in attributes] == ["STALLS", "GOODS"]
    goods = attributes[1]
    values = goods["values"] if fmt == "json" else goods["values"]["value"]
    assert [v["key"] for v in values] == ["food", "fruit", "clothes", "other"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_search_and_one_request(root: str, fmt: str) -> None:
    client = GeoReport(root, jurisdiction=JURISDICTION, output_format=fmt)
    found = client.get_service_requests(start_date=iso(hours_ago(24)), end_date=iso(hours_ago(0)), status="open")
    assert [r["service_request_id"] for r in found] == ["GR-U", "GR-3", "GR-2", "GR-1"]
    vendors = client.get_service_requests(service_code="E0501")
    assert [r["service_request_id"] for r in vendors] == ["GR-3", "GR-1"]
    by_id = client.get_service_requests(service_request_id="GR-2,GR-U")
    assert [r["service_request_id"] for r in by_id] == ["GR-2", "GR-U"]
    one = client.get_service_request("GR-1")
    assert one["service_request_id"] == "GR-1" and one["status"] == "open"
    assert one["requested_datetime"] == iso(hours_ago(5)) and one["media_url"] == "https://img.example.cn/1.jpg"
    assert float(one["lat"]) == pytest.approx(31.2605) and one["description"] == "占道经营"
    assert one["agency_responsible"] == "enforcement"


def test_both_formats_tell_the_same(root: str) -> None:
    """What the library reads from XML (text) is what it reads from JSON (typed), field by field."""
    as_json = GeoReport(root, jurisdiction=JURISDICTION, output_format="json").get_service_request("GR-2")
    as_xml = GeoReport(root, jurisdiction=JURISDICTION, output_format="xml").get_service_request("GR-2")
    assert list(as_xml) == list(as_json)
    for key, value in as_json.items():
        assert as_xml[key] == (None if value is None else str(value)), key


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_errors_reach_the_client_as_http_errors(root: str, fmt: str) -> None:
    other = GeoReport(root, jurisdiction="sfgov.org", output_format=fmt)
    with pytest.raises(requests.HTTPError) as err:
        other.get_service_list()
    assert err.value.response.status_code == 400
    with pytest.raises(requests.HTTPError) as missing:
        GeoReport(root, jurisdiction=JURISDICTION, output_format=fmt).get_service_request("NOPE")
    response: Any = missing.value.response
    assert response.status_code == 404 and "NOPE" in response.text
