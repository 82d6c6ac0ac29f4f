"""The worker's fast paths give what the plain code gives: the readings decoder's fast path
(`Decoder.reading_fields`) against `Decoder.reading`, the batch readings chain (`Ingest.readings`) against an
independent per-reading model of the alarm and minute rules, and the dead-letter limit's run-length window
against a per-message window."""

from __future__ import annotations

import math
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model.records import ReadingColumns
from pipeline.stages.deadletters import DeadLetterLimit, DeadLetterLimitExceeded
from pipeline.stages.decode import Decoder, default_decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.stages.ingest import Ingest
from pipeline.stages.registry import load_registry
from pipeline.stages.sensors import SensorState
from pipeline.wire import Message
from tests.pipeline.factories import T0, raw, reading

NOW = T0 + timedelta(days=1)


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(taxonomy=default_decoder().taxonomy, now=lambda: NOW)


def slow(decoder: Decoder, payload: bytes) -> tuple[Any, ...] | None:
    try:
        r = decoder.reading(payload)
    except InvalidEvent:
        return None
    return (r.sensor_id, r.sensor_type, r.value, r.at.timestamp(), r.at, r.lon, r.lat)


def check_same(decoder: Decoder, payload: bytes) -> tuple[Any, ...] | None:
    """The fast path either defers (None) or gives exactly the fields `reading` gives."""
    fast = decoder.reading_fields(payload, decoder.reading_bounds())
    if fast is not None:
        expected = slow(decoder, payload)
        assert expected is not None, f"fast path accepted what reading() rejects: {payload!r}"
        assert fast == expected and fast[4].tzinfo is UTC
    return fast


def test_the_fast_path_takes_ordinary_readings(decoder: Decoder) -> None:
    """Readings as sensors send them go the fast way (else the fast path would be dead code)."""
    shapes = [reading("S-1", 3), reading("S-2", 0.25, unit="%"), reading(" S-3 ", -1.5, lon=121.5, lat=31.2),
              {**reading("S-4", 7), "measured_at": "2026-11-20T09:00:00.250+08:00"},
              {**reading("S-5", 7), "measured_at": "2026-11-20T01:00:00Z"}]
    for obj in shapes:
        assert check_same(decoder, raw(obj)) is not None, obj
    fields = decoder.reading_fields(raw(shapes[3]), decoder.reading_bounds())
    assert fields is not None and fields[3] == datetime(2026, 11, 20, 1, 0, 0, 250000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("obj", [
    {**reading(), "value": True}, {**reading(), "value": "1"}, {**reading(), "value": None},
    {**reading(), "sensor_id": "  "}, {**reading(), "sensor_id": "x" * 129}, {**reading(), "sensor_type": 5},
    {**reading(), "measured_at": "2026-11-20T01:00:00"}, {**reading(), "measured_at": "yesterday"},
    {**reading(), "measured_at": (NOW + timedelta(hours=2)).isoformat()},
    {**reading(), "measured_at": "2014-12-31T23:59:59Z"},
    {**reading(), "unit": 5}, {**reading(), "unit": "u" * 33},
    {**reading(), "lat": 31.2}, {**reading(), "lon": 121.5, "lat": 95.0}, {**reading(), "lon": 200.0, "lat": 31.0},
    {**reading(), "lon": True, "lat": 31.0},
])
def test_the_fast_path_defers_whatever_reading_rejects(decoder: Decoder, obj: dict[str, Any]) -> None:
    payload = raw(obj)
    assert slow(decoder, payload) is None
    assert check_same(decoder, payload) is None


@pytest.mark.parametrize("tail", [b'"\x80x"', b'"x\\ud800"', b"1e999", b"[" * 2000 + b"]" * 2000, b'"\xe6\x97\xa5"'])
def test_hostile_bytes_in_a_reading_never_break_the_fast_path(decoder: Decoder, tail: bytes) -> None:
    """Invalid UTF-8, a lone surrogate, an infinite number or a deep nesting, in a known field or an extra one:
    the fast path defers (never raises), and `reading` decides (the chaos suite's hostile messages found a
    UnicodeDecodeError from the typed decoder)."""
    head = raw(reading("S-1", 3))[:-1]
    for payload in (head + b',"extra":' + tail + b"}", raw(reading("S-1", 3)).replace(b'"S-1"', tail, 1),
                    raw({**reading("S-1", 3), "unit": "%"}).replace(b'"%"', tail, 1)):
        assert check_same(decoder, payload) is None or slow(decoder, payload) is not None


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_after_a_reading_s_start_never_break_the_fast_path(decoder: Decoder, junk: bytes) -> None:
    check_same(decoder, raw(reading("S-1", 3))[:-1] + junk)


def test_the_fast_path_defers_non_objects_and_huge_messages(decoder: Decoder) -> None:
    for payload in (b"", b"[1, 2]", b'"x"', b"{", b"\xff\xfe", raw({**reading(), "pad": "x" * 70_000}),
                    orjson.dumps(reading()).replace(b"1.0", b"1e999")):
        assert check_same(decoder, payload) is None


def test_times_at_the_window_edges_are_left_to_reading(decoder: Decoder) -> None:
    """Within a second of the window's edges the fast path defers, so rounding never decides a rejection."""
    latest = NOW + decoder.window.max_ahead
    for at in (latest, latest - timedelta(microseconds=1), decoder.window.earliest):
        assert check_same(decoder, raw(reading(at=at))) is None
    assert slow(decoder, raw(reading(at=latest))) is not None


_text = st.text(alphabet=st.sampled_from(list("S- 19Z:T+.x\t中")), max_size=12)
_number = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                    st.none(), _text)
_times = st.one_of(
    st.datetimes(min_value=datetime(2014, 12, 31), max_value=datetime(2026, 11, 21, 3),
                 timezones=st.sampled_from([UTC, None, __import__("datetime").timezone(timedelta(hours=8))]))
    .map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(2015, 1, 2), max_value=datetime(2026, 11, 20)).map(
        lambda d: d.isoformat() + "Z"),
    _text, st.integers(-2**40, 2**40), st.none())


@settings(max_examples=600, deadline=None)
@given(sid=st.one_of(_text, st.integers(-2**40, 2**40), st.none()), stype=st.one_of(_text, st.just("smoke")),
       value=_number, at=_times, unit=st.one_of(st.none(), _text, st.integers(-9, 9)),
       lon=_number, lat=st.one_of(st.floats(-100, 100), st.none(), st.integers(-100, 100)),
       drop=st.sets(st.sampled_from(["sensor_id", "sensor_type", "value", "measured_at", "unit", "lon", "lat"])))
def test_the_fast_path_agrees_with_reading_on_anything(sid: Any, stype: Any, value: Any, at: Any, unit: Any,
                                                       lon: Any, lat: Any, drop: set[str]) -> None:
    d = Decoder(taxonomy=default_decoder().taxonomy, now=lambda: NOW)
    obj = {"sensor_id": sid, "sensor_type": stype, "value": value, "measured_at": at, "unit": unit, "lon": lon,
           "lat": lat}
    for key in drop:
        obj.pop(key)
    check_same(d, orjson.dumps(obj))


# -- the batch chain against a per-reading model ---------------------------------------------------------

REGISTRY = ("sensor_id,sensor_type,lon,lat,category,alarm,clear,debounce\n"
            "A,manhole_tilt,121.49,31.265,,,,\n"          # above 15, clear 5, debounce 2
            "B,pipe_pressure,121.48,31.27,,0.2,0.3,1\n")   # below 0.2, clear above 0.3


def model(readings: list[tuple[str, str, float, float]], thresholds: dict[str, tuple[str, float, float, int]]
          ) -> tuple[list[str], dict[tuple[str, int], tuple[int, float, float]], int]:
    """The rules written out plainly: per sensor, readings not newer than its latest are late; alarm after
    `debounce` consecutive readings beyond `alarm`, clear when back past `clear`; per minute: count, last, max."""
    last: dict[str, float] = {}
    alarm: dict[str, bool] = {}
    streak: dict[str, int] = {}
    count: dict[str, int] = {}
    alarms: list[str] = []
    minutes: dict[tuple[str, int], tuple[int, float, float]] = {}
    late = 0
    for sid, _stype, value, ts in readings:
        if ts <= last.get(sid, 0.0):
            late += 1
            continue
        last[sid] = ts
        key = (sid, int(ts // 60 * 60))
        n, _, top = minutes.get(key, (0, 0.0, -math.inf))
        minutes[key] = (n + 1, value, max(top, value))
        if sid not in thresholds:
            continue
        direction, level, clear, debounce = thresholds[sid]
        beyond = value >= level if direction == "above" else value <= level
        back = value <= clear if direction == "above" else value >= clear
        if alarm.get(sid):
            if back:
                alarm[sid] = False
        elif beyond:
            streak[sid] = streak.get(sid, 0) + 1
            if streak[sid] >= debounce:
                alarm[sid], streak[sid] = True, 0
                count[sid] = count.get(sid, 0) + 1
                alarms.append(f"iot:{sid}:alarm{count[sid]}")
        else:
            streak[sid] = 0
    return alarms, minutes, late


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "U"]), st.floats(0, 30), st.integers(-40, 90)),
                min_size=1, max_size=120),
       st.integers(1, 40))
def test_the_batch_chain_matches_the_model(tmp_path_factory: pytest.TempPathFactory,
                                           draws: list[tuple[str, float, int]], batch: int) -> None:
    """Readings (some late, an unknown sensor U) in batches of any size give the model's alarms,
    late count and minute rows (the last row of each sensor-minute wins, as in ClickHouse's ReplacingMergeTree)."""
    path = tmp_path_factory.mktemp("reg") / "sensors.csv"
    path.write_text(REGISTRY, encoding="utf-8")
    ingest = Ingest(decoder=Decoder(taxonomy=default_decoder().taxonomy, now=lambda: NOW), grid=None,  # type: ignore[arg-type]
                    gazetteer=None, sensors=load_registry(path))  # type: ignore[arg-type]
    types = {"A": "manhole_tilt", "B": "pipe_pressure", "U": "smoke"}
    values = {"A": lambda v: v, "B": lambda v: v / 50, "U": lambda v: v}
    clock = T0.timestamp() + 60     # steps back (late or replayed readings) and forth, across minutes
    readings = []
    for sid, v, step in draws:
        clock += step
        readings.append((sid, types[sid], values[sid](v), clock))
    messages = [Message("raw_iot", 0, i, raw(reading(sid, value, at=datetime.fromtimestamp(ts, UTC),
                                                     sensor_type=stype)), sid.encode())
                for i, (sid, stype, value, ts) in enumerate(readings)]
    states: dict[str, SensorState] = {}
    columns = ReadingColumns()
    alarms: list[str] = []
    late = 0

    def locate(events: list[Any], origins: list[Any], out: Any, count_accepted: bool = True) -> None:
        alarms.extend(e.event_id for e in events)

    ingest._locate_into = locate  # type: ignore[method-assign]    # no grid here: the alarms are what counts
    for i in range(0, len(messages), batch):
        res = ingest.readings(messages[i:i + batch], states, columns)
        assert not res.deadletters and res.accepted == len(messages[i:i + batch])
        late += res.late_readings
    want_alarms, want_minutes, want_late = model(readings, {"A": ("above", 15.0, 5.0, 2),
                                                            "B": ("below", 0.2, 0.3, 1)})
    assert alarms == want_alarms and late == want_late
    rows: dict[tuple[str, int], tuple[int, float, float]] = {}
    cols = columns.lists()
    for sid, minute, n, last, top in zip(cols["sensor_id"], cols["minute"], cols["readings"], cols["last_value"],
                                         cols["max_value"], strict=True):
        rows[(sid, int(minute))] = (n, last, top)
    assert rows == want_minutes


# -- the dead-letter limit -------------------------------------------------------------------------------

class PerMessageLimit:
    def __init__(self, max_ratio: float, window: int, min_messages: int) -> None:
        self.max_ratio, self.min_messages = max_ratio, min_messages
        self.recent: deque[bool] = deque(maxlen=window)

    def record(self, ok: int, bad: int) -> bool:
        self.recent.extend([False] * ok + [True] * bad)
        return len(self.recent) >= self.min_messages and sum(self.recent) / len(self.recent) > self.max_ratio


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 900), st.integers(0, 900)), min_size=1, max_size=30),
       st.integers(10, 1000), st.floats(0.05, 0.95))
def test_the_dead_letter_window_matches_a_per_message_window(batches: list[tuple[int, int]], window: int,
                                                             ratio: float) -> None:
    limit, reference = DeadLetterLimit(ratio, window, min_messages=window // 2), PerMessageLimit(ratio, window,
                                                                                                window // 2)
    for ok, bad in batches:
        tripped = reference.record(ok, bad)
        if tripped:
            with pytest.raises(DeadLetterLimitExceeded):
                limit.record(ok, bad)
            return
        limit.record(ok, bad)

