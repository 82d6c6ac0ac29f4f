"""Issue #10.5 (HTTP): hostile requests to every endpoint that takes input. Each answer is a 4xx with a reason
(or, for Open311, a 2xx only when the ticket it queued is one the worker's decoder accepts); never a 5xx, never
a message on Kafka for a refused request; and the server still answers /healthz afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.stages.fields import InvalidEvent
from pipeline.web.app import build_app
from pipeline.web.archive import CaseArchive
from pipeline.web.centre import Centre
from pipeline.web.outbox import MemoryOutbox
from pipeline.web.ratelimit import RateLimiter
from tests import fuzz
from tests.security.test_web_access import board
from tests.web.helpers import API_KEY, PASSWORD, centre
from tests.web.open311_data import District, chdb_database, hours_ago, ticket

EXAMPLES = 600
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

text = st.text(max_size=60) | st.sampled_from(["", " ", "\u0000", "' OR 1=1 --", "../../etc/passwd", "%00",
                                               "C-hand", "E0501", "NaN", "1e999", "<script>", "字" * 5000])
json_scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | text
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=8)


def body_of(fields: list[str]) -> Any:
    """A request body: raw hostile bytes, or a JSON object over the endpoint's own field names."""
    obj = st.dictionaries(st.sampled_from(fields) | text, json_value, max_size=6)
    return st.one_of(
        st.binary(max_size=400).map(lambda b: ("raw", b)),
        obj.map(lambda d: ("json", orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS))),
        st.sampled_from(fuzz.KINDS).flatmap(
            lambda k: st.randoms(use_true_random=False).map(lambda r: ("raw", fuzz.hostile("hotline", k, r)))),
    )


class Server:
    """One app on a test server for all examples of a test (a server per example would take minutes)."""

    def __init__(self, c: Centre) -> None:
        self.c = c
        self.loop = asyncio.new_event_loop()
        self.client: TestClient[Any, Any] = TestClient(TestServer(build_app(c, start_background=False)),
                                                      loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.token = ""

    def call(self, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            resp = await self.client.request(method, path, **kw)
            return resp.status, await resp.read()
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@contextmanager
def server(archive: Any = None) -> Iterator[Server]:
    c = centre(board(), limiter=RateLimiter(rate=1e9, burst=1e9), signin_limiter=RateLimiter(rate=1e9, burst=1e9),
               archive=archive)
    s = Server(c)
    status, body = s.call("POST", "/api/token", json={"name": "hand", "password": PASSWORD})
    assert status == 200
    s.token = orjson.loads(body)["token"]
    try:
        yield s
        status, _ = s.call("GET", "/healthz")
        assert status == 200                            # still up after everything
    finally:
        s.close()


def sent(s: Server) -> int:
    assert isinstance(s.c.outbox, MemoryOutbox)
    return len(s.c.outbox.sent)


def refused_with_reason(status: int, body: bytes, fmt: str = "json") -> bool:
    """A 4xx whose body says why: `{"error"}` (JSON API), or an Open311 error in its format (XML parsed)."""
    if not 400 <= status < 500:
        return False
    if fmt == "xml":
        root = ET.fromstring(body)
        return root.tag == "errors" and int(root.findtext("error/code") or 0) == status and \
            bool((root.findtext("error/description") or "").strip())
    data = orjson.loads(body)
    reason = data[0]["description"] if isinstance(data, list) else data["error"]
    return bool(str(reason).strip())


ENDPOINTS: dict[str, tuple[str, list[str], Callable[[Server], dict[str, str]]]] = {
    "actions": ("/api/cases/C-hand/actions", ["action", "note", "update_id"],
                lambda s: {"Authorization": f"Bearer {s.token}"}),
    "patrol": ("/api/patrol", ["category", "lat", "lon", "note"], lambda s: {"Authorization": f"Bearer {s.token}"}),
    "place": ("/api/unlocated/place", ["event_id", "lon", "lat"], lambda s: {"Authorization": f"Bearer {s.token}"}),
    "token": ("/api/token", ["name", "password"], lambda s: {}),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_hostile_bodies_are_refused_with_a_reason(endpoint: str) -> None:
    """JSON API endpoints: a body that is not what the endpoint needs is a 4xx with a reason, nothing is sent.
    (The signed-in member may accept C-hand, so a well-formed accept can pass: then exactly one message.)"""
    path, fields, headers = ENDPOINTS[endpoint]
    with server() as s:
        @FAST
        @given(body=body_of(fields), as_json=st.booleans())
        def prop(body: tuple[str, bytes], as_json: bool) -> None:
            before = sent(s)
            ctype = "application/json" if as_json else "application/x-www-form-urlencoded"
            status, answer = s.call("POST", path, data=body[1], headers={**headers(s), "Content-Type": ctype})
            assert status < 500, (status, body, answer[:300])
            if status >= 400:
                assert refused_with_reason(status, answer), (status, answer[:300])
                assert sent(s) == before
            else:
                assert sent(s) == before + (endpoint != "token")
        prop()


@given(body=body_of(["service_code", "lat", "long", "address_string", "description", "requested_datetime",
                     "service_request_id", "first_name", "last_name", "phone", "request_type", "channel",
                     "media_url", "address_id", "jurisdiction_id", "attribute", "attribute[STALLS]",
                     "attribute[GOODS][]", "attribute[COVER_PROBLEM]", "attribute[FALL_RISK]"]),
       as_json=st.booleans(), fmt=st.sampled_from(["json", "xml"]))
@FAST
def test_open311_post_refuses_what_the_worker_would_dead_letter(body: tuple[str, bytes], as_json: bool,
                                                                fmt: str) -> None:
    """Open311 POST in either format: 4xx with a reason (an Open311 error in that format), or 200 with exactly
    one queued ticket that the worker's decoder accepts and that carries no caller phone in clear text; never a
    5xx."""
    with server() as s:
        ctype = "application/json" if as_json else "application/x-www-form-urlencoded"
        status, answer = s.call("POST", f"/open311/v2/requests.{fmt}", data=body[1],
                                headers={"X-Api-Key": API_KEY, "Content-Type": ctype})
        assert status < 500, (status, body, answer[:300])
        if status >= 400:
            assert refused_with_reason(status, answer, fmt) and sent(s) == 0
            return
        assert status == 200 and sent(s) == 1
        _, _, raw = s.c.outbox.sent[0]  # type: ignore[attr-defined]
        try:
            s.c.decoder.hotline(raw)
        except InvalidEvent as err:
            pytest.fail(f"Open311 queued a ticket the worker dead-letters ({err.reason}): {raw[:300]!r}")


def test_open311_hostile_hotline_messages_in_bulk() -> None:
    """2,800 messages of the hotline fuzz corpus as Open311 bodies: never a 5xx; each refusal has a reason."""
    with server() as s:
        statuses = []
        for _, raw in fuzz.corpus("hotline", 2_800, seed=3):
            status, answer = s.call("POST", "/open311/v2/requests.json", data=raw,
                                    headers={"X-Api-Key": API_KEY, "Content-Type": "application/json"})
            assert status < 500, (status, raw[:200], answer[:200])
            if status >= 400:
                assert refused_with_reason(status, answer)
            statuses.append(status)
        assert statuses.count(200) == sent(s)
        assert sum(1 for x in statuses if x >= 400) > 0.8 * len(statuses)


@FAST
@given(path=st.sampled_from(["/api/cases/{}", "/api/cells/{}", "/open311/v2/requests/{}.json",
                             "/open311/v2/services/{}.json", "/open311/v2/requests.json?service_request_id={}",
                             "/open311/v2/requests/{}.xml", "/open311/v2/services/{}.xml",
                             "/open311/v2/tokens/{}.xml", "/open311/v2/tokens/{}.json",
                             "/open311/v2/requests.xml?service_request_id={}", "/signin?next={}"]),
       value=text)
def test_hostile_paths_and_queries_never_fail_the_server(path: str, value: str) -> None:
    """Path and query values (traversal, NUL, quotes, huge): an answer below 500 and no other team's case."""
    from urllib.parse import quote

    with server() as s:
        status, answer = s.call("GET", path.format(quote(value, safe="")),
                                headers={"Authorization": f"Bearer {s.token}"}, allow_redirects=False)
        assert status < 500, (path, value, status)
        assert b"C-enf" not in answer


# -- Open311 reads in both formats, against the real search SQL (current ClickHouse in process) --------------

SEARCH_PARAMS = ["start_date", "end_date", "status", "service_code", "service_request_id", "page", "page_size",
                 "extensions", "jurisdiction_id"]
search_value = text | st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "open,closed", "closed", "E0501,P0101",
                                       "1", "0", "-1", "1000", "1001", "99999999999999999999", "true", "hongkou.sh.cn",
                                       ",,,", "E0501," * 300, "1e3", "２"])
OPEN311_READS = ["/open311/v2/services.{fmt}", "/open311/v2/services/E0501.{fmt}", "/open311/v2/requests.{fmt}",
                 "/open311/v2/requests/F1.{fmt}", "/open311/v2/tokens/F1.{fmt}", "/open311/discovery.{fmt}"]


@contextmanager
def open311_server() -> Iterator[Server]:
    """A server whose Open311 search runs on a chdb database holding a few stored tickets."""
    for db in chdb_database():
        District(db.store).tickets(ticket("F1", hours_ago(2), attributes={"STALLS": "1"}),
                                   ticket("F2", hours_ago(30), code="P0118", lat=31.2705, long=121.4836))
        with server(CaseArchive(db)) as s:
            yield s


def test_open311_hostile_queries_in_both_formats_never_fail_the_server() -> None:
    """Every read method with hostile query parameters, in XML and JSON: a 2xx that parses in its format (XML
    with a real parser), or a 4xx Open311 error with a reason in that format; never a 5xx."""
    from urllib.parse import urlencode

    with open311_server() as s:
        @FAST
        @given(path=st.sampled_from(OPEN311_READS), fmt=st.sampled_from(["json", "xml"]),
               params=st.dictionaries(st.sampled_from(SEARCH_PARAMS) | text, search_value, max_size=5))
        def prop(path: str, fmt: str, params: dict[str, str]) -> None:
            url = path.format(fmt=fmt) + "?" + urlencode(params)
            status, answer = s.call("GET", url)
            assert status < 500, (url, status, answer[:300])
            if len(url) > 8000:     # the HTTP server itself refuses request lines over 8 KiB (a plain 400)
                assert 400 <= status < 500
            elif status >= 400:
                assert refused_with_reason(status, answer, fmt), (url, status, answer[:300])
            elif fmt == "xml":
                assert ET.fromstring(answer).tag in ("services", "service_definition", "service_requests",
                                                     "discovery")
            else:
                orjson.loads(answer)
        prop()
