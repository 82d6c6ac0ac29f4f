"""Photos on the wire (patrol photo, a resolve's after photo), the rules' `after_photo`, the `live` clock of the
case stage, and the live district's periods and pacing (pipeline.simulate.live), without services."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.model.events import CaseUpdate, Event, Location
from pipeline.simulate.config import SHANGHAI, SimConfig
from pipeline.simulate.generate import SimMessage
from pipeline.simulate.live import LiveDistrict, LiveStatus, local_midnight, produce_live
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import LIVE_WITHIN, CaseStage
from pipeline.stages.decode import default_decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.wire import book_key, decode_located, encode_located, encode_update
from rules.engine import load_ruleset
from rules.errors import RulesError
from tests.pipeline.factories import T0, FakeRouter, iso, patrol, raw, update
from tests.rules.factories import rules_file

LOC = Location(cell="310109009001002", subdistrict="310109009", grid_kind="street", grid_version="g1")


# -- the wire ---------------------------------------------------------------------------------------------

def test_a_patrol_photo_is_kept_as_the_report_media_link() -> None:
    decoder = default_decoder()
    msg = patrol() | {"photo_url": "https://oss.example.cn/p/1.jpg"}
    assert decoder.patrol(raw(msg)).media_url == "https://oss.example.cn/p/1.jpg"
    assert decoder.patrol(raw(patrol())).media_url is None


def test_a_stored_photo_path_is_not_masked_but_an_external_link_is() -> None:
    # the web's photo ids are hex hashes: this one holds "5234771", which reads as a local phone number
    # (CI once stored "/photos/2c****771c...": the case page's photo was then a broken link)
    decoder = default_decoder()
    path = "/photos/2c5234771c0a6ada42e87b07.jpg"
    assert decoder.patrol(raw(patrol() | {"photo_url": path})).media_url == path
    outside = decoder.patrol(raw(patrol() | {"photo_url": "https://oss.example.cn/p/13812345678.jpg"})).media_url
    assert outside is not None and "13812345678" not in outside and outside.startswith("https://oss.example.cn/p/")
    ticket = {"service_request_id": "T-1", "requested_datetime": iso(T0), "service_code": "E0501",
              "lat": 31.26, "long": 121.49, "media_url": "https://oss.example.cn/p/13812345678.jpg"}
    assert "13812345678" not in (decoder.hotline(raw(ticket)).media_url or "")


def test_only_a_resolve_carries_a_photo_and_it_must_be_a_link_or_a_store_path() -> None:
    decoder = default_decoder()
    ok = decoder.case_update(raw(update("C1", "resolve", "handling") | {"photo_url": "/photos/abcdefgh12.jpg"}))
    assert ok.photo_url == "/photos/abcdefgh12.jpg"
    assert decoder.case_update(raw(update("C1", "resolve", "handling"))).photo_url == ""
    with pytest.raises(InvalidEvent, match="only a resolve carries a photo"):
        decoder.case_update(raw(update("C1", "accept", "handling") | {"photo_url": "https://x.cn/a.jpg"}))
    for bad in ("/photos/../etc/passwd", "/etc/passwd", "ftp://x.cn/a.jpg", "/photos/short.jpg"):
        with pytest.raises(InvalidEvent, match="photo_url"):
            decoder.case_update(raw(update("C1", "resolve", "handling") | {"photo_url": bad}))


def test_the_after_photo_survives_the_located_topic() -> None:
    u = CaseUpdate("u1", "C1", "resolve", "handling", "a", T0, "done", photo_url="/photos/abcdefgh12.jpg")
    back = decode_located(encode_update(u))
    assert isinstance(back, CaseUpdate) and back.photo_url == "/photos/abcdefgh12.jpg"


# -- the rules' after_photo -------------------------------------------------------------------------------

def test_after_photo_is_read_and_checked_against_the_taxonomy(tmp_path: Path) -> None:
    rules = "- {id: r, order: 1, when: {category: E01*}, then: {team: handling}}\n"
    path = rules_file(tmp_path, rules, default="default: {team: handling}\nafter_photo: [P01*, E0111]\n")
    after = load_ruleset(path).after_photo
    assert after.required("P0104") and after.required("E0111")
    assert not after.required("E0110") and not after.required("E0501")
    assert not load_ruleset(rules_file(tmp_path, rules, name="none.yaml")).after_photo.required("P0104")
    bad = rules_file(tmp_path, rules, default="default: {team: handling}\nafter_photo: [P0199, X1*]\n",
                     name="bad.yaml")
    with pytest.raises(RulesError) as err:
        load_ruleset(bad)
    text = "\n".join(err.value.problems)
    assert "after_photo" in text and "P0199" in text and "X1*" in text


def test_the_shipped_rules_require_an_after_photo_for_drain_grates_and_not_for_potholes() -> None:
    after = load_ruleset().after_photo
    assert after.required("P0104") and after.required("E0107")
    assert not after.required("E0110")


class PhotoRouter(FakeRouter):
    def __init__(self, after: Any) -> None:
        super().__init__()
        self.after_photo = after


def _open_case(book: CaseBook, router: Any, code: str) -> str:
    out = book.add_event(Event("hotline:1", "hotline", code, T0, lon=121.49, lat=31.265, location=LOC), router)
    return next(iter(out.states))


def test_a_resolve_without_the_required_photo_is_refused_and_changes_nothing() -> None:
    after = load_ruleset().after_photo
    book = CaseBook(book_key(LOC))
    router = PhotoRouter(after)
    cid = _open_case(book, router, "P0104")
    before = book.cases[cid].to_dict()
    out = book.apply_update(CaseUpdate("u1", cid, "resolve", "handling", "a", T0 + timedelta(hours=1), "x"), router)
    assert out.refusals and "needs an after photo" in out.refusals[0]
    assert book.cases[cid].to_dict() == before
    out = book.apply_update(CaseUpdate("u2", cid, "resolve", "handling", "a", T0 + timedelta(hours=1), "x",
                                       photo_url="/photos/abcdefgh12.jpg"), router)
    assert not out.refusals
    assert out.states[cid]["status"] == "resolved" and out.states[cid]["after_photo_url"] == "/photos/abcdefgh12.jpg"
    resolved = [t for t in out.transitions if t.status == "resolved"]
    assert [t.photo_url for t in resolved] == ["/photos/abcdefgh12.jpg"]


def test_a_router_without_after_photo_requires_none() -> None:
    book = CaseBook(book_key(LOC))
    router = FakeRouter()
    cid = _open_case(book, router, "P0104")
    out = book.apply_update(CaseUpdate("u1", cid, "resolve", "handling", "a", T0 + timedelta(hours=1), "x"), router)
    assert not out.refusals and out.states[cid]["after_photo_url"] is None


# -- the live clock ---------------------------------------------------------------------------------------

def _report(eid: str, at: datetime) -> tuple[str, bytes]:
    return book_key(LOC), encode_located(Event(eid, "hotline", "E0501", at, lon=121.49, lat=31.265, location=LOC))


def test_the_live_clock_is_the_stream_clock_on_a_backlog_and_the_wall_clock_once_caught_up() -> None:
    wall = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    stage = CaseStage(FakeRouter(), clock="live", wall_now=lambda: wall)
    books: dict[str, CaseBook] = {}
    old = wall - timedelta(hours=20)
    out = stage.apply([_report("hotline:old", old)], books)
    # a backlog: dispatched at the report's own time, and the timer escalates nothing (FakeRouter: 4 h SLA)
    assert [a.created_at for a in out.assignments] == [old]
    assert not stage.escalate(books.values()).assignments
    recent = wall - LIVE_WITHIN / 2
    far = Event("hotline:new", "hotline", "E0501", recent, lon=121.60, lat=31.30, location=LOC)
    out = stage.apply([(book_key(LOC), encode_located(far))], books)
    # caught up: the wall clock stamps the dispatch and escalates the old case before it
    assert {a.kind: a.created_at for a in out.assignments} == {"escalation": wall, "dispatch": wall}
    assert stage.is_live(wall)


def test_the_stream_clock_never_uses_the_wall_clock() -> None:
    wall = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    stage = CaseStage(FakeRouter(), clock="stream", wall_now=lambda: wall)
    books: dict[str, CaseBook] = {}
    at = wall - timedelta(seconds=30)
    out = stage.apply([_report("hotline:x", at)], books)
    assert [a.created_at for a in out.assignments] == [at]


# -- the live district ------------------------------------------------------------------------------------

class Planned:
    """A stand-in simulation: messages at given times, and the config it was planned from."""

    def __init__(self, config: SimConfig, times: list[datetime]) -> None:
        self.config = config
        self.times = times
        self.registry_writes: list[Path] = []

    def messages(self) -> list[SimMessage]:
        return [SimMessage("raw_patrol", b"k", orjson.dumps({"n": i, "at": iso(t)}), t)
                for i, t in enumerate(self.times)]

    def write_registry(self, path: Path) -> None:
        self.registry_writes.append(path)


def test_local_midnight_is_shanghai_midnight() -> None:
    at = datetime(2026, 3, 2, 17, 30, tzinfo=UTC)          # 01:30 on 3 March in Shanghai
    assert local_midnight(at) == datetime(2026, 3, 3, tzinfo=SHANGHAI).astimezone(UTC)


def test_the_district_plans_yesterday_and_today_then_one_day_at_a_time(tmp_path: Path) -> None:
    now = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)            # 12:00 in Shanghai
    planned: list[SimConfig] = []

    def plan(cfg: SimConfig) -> Any:
        planned.append(cfg)
        return Planned(cfg, [])

    district = LiveDistrict(SimConfig(sensors=10), now=lambda: now, registry=tmp_path / "s.csv", plan=plan)
    periods = district.periods()
    for _ in range(3):
        next(periods)
    yesterday = datetime(2026, 3, 1, tzinfo=SHANGHAI).astimezone(UTC)
    assert [(c.start, c.days) for c in planned] == [(yesterday, 2.0), (yesterday + timedelta(days=2), 1.0),
                                                    (yesterday + timedelta(days=3), 1.0)]


class FakeProducer:
    def __init__(self, clock: list[datetime]) -> None:
        self.clock = clock
        self.sent: list[tuple[str, datetime]] = []   # (message time, wall time when sent)
        self.flushes = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        self.sent.append((orjson.loads(value)["at"], self.clock[0]))

        class Future:
            def add_errback(self, fn: Any) -> None:
                pass
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


def test_due_messages_go_at_once_and_later_ones_each_at_its_time() -> None:
    from pipeline.config import Settings

    clock = [datetime(2026, 3, 2, 4, 0, tzinfo=UTC)]
    start = clock[0]
    times = [start - timedelta(hours=5), start - timedelta(minutes=1), start + timedelta(seconds=30),
             start + timedelta(seconds=95)]
    stop = threading.Event()

    def plan(cfg: SimConfig) -> Any:
        if cfg.days == 2:
            return Planned(cfg, times)
        stop.set()                    # the next day: enough for the test
        return Planned(cfg, [])

    def sleep(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    district = LiveDistrict(SimConfig(sensors=10), now=lambda: clock[0], plan=plan)
    producer = FakeProducer(clock)
    seen: list[LiveStatus] = []
    status = produce_live(Settings(), district, stop, LiveStatus(), producer=producer, sleep=sleep,
                          on_caught_up=lambda s: seen.append(replace(s)))
    assert status.sent == 4
    sent_at = {at: wall for at, wall in producer.sent}
    for t in times:
        wall = sent_at[iso(t)]
        assert wall >= t                         # never before its time
        assert wall - max(t, start) < timedelta(seconds=1.01)   # and not later than a pacing step after it
    assert len(seen) == 1 and seen[0].sent == 2 and seen[0].caught_up_at == start
    assert producer.flushes >= 2
