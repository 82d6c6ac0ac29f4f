"""Producing and recording: pacing, the Kafka producer contract, NDJSON round trips, the alarm rule, CLI checks."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings, Topics
from pipeline.model.events import Event
from pipeline.simulate.cli import config_from_args
from pipeline.simulate.config import ConfigError
from pipeline.simulate.generate import SimMessage
from pipeline.simulate.produce import (
    RecordingError,
    from_line,
    paced,
    produce_messages,
    speed_factor,
    to_line,
)
from pipeline.simulate.sensorsim import alarms_of
from pipeline.stages.registry import Sensor, Threshold
from pipeline.stages.sensors import SensorState, observe

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_ndjson_lines_replay_every_message_byte_for_byte(messages):
    """JSON messages, non-canonical text and non-UTF-8 bytes all come back exactly as they were."""
    odd = [SimMessage("raw_hotline", b"k", b'{"a": 1}', T0), SimMessage("raw_iot", None, b"\xff\x00garbage", T0),
           SimMessage("case_updates", b"c", b"[1,2]", T0)]
    for m in list(messages[:3000]) + [m for m in messages if m.topic != "raw_iot"][:3000] + odd:
        back = from_line(to_line(m), "test:1")
        assert (back.topic, back.key, back.value, back.at) == (m.topic, m.key, m.value, m.at)


@pytest.mark.parametrize("line, why", [
    (b"not json", "not JSON"), (b'{"topic":"cityops.other","at":"2026-01-01T00:00:00Z","value":{}}', "topic"),
    (b'{"topic":"cityops.raw.iot","value":{}}', "at"), (b'{"topic":"cityops.raw.iot","at":"2026-01-01T00:00:00Z"}',
                                                     "value"),
])
def test_bad_recording_lines_name_the_line(line, why):
    """A line that cannot be replayed is refused with its file:line and the key at fault."""
    with pytest.raises(RecordingError, match=f"rec.ndjson:7: .*{why}"):
        from_line(line, "rec.ndjson:7")


def test_speed_names():
    """realtime is 1, xN is N, max is unpaced; anything else is refused."""
    assert speed_factor("realtime") == 1.0 and speed_factor("x60") == 60.0 and speed_factor("max") is None
    for bad in ("fast", "x0", "x-3", "60"):
        with pytest.raises(ValueError):
            speed_factor(bad)


def test_pacing_holds_each_message_until_its_scaled_time():
    """At x60 a message 10 simulated minutes after the first waits 10 wall seconds; max never waits."""
    now = [100.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    msgs = [SimMessage("raw_iot", None, b"{}", T0 + timedelta(minutes=m)) for m in (0, 0, 10, 25)]
    assert len(list(paced(msgs, 60.0, sleep=sleep, clock=lambda: now[0]))) == 4
    assert waits == pytest.approx([10.0, 15.0])
    waits.clear()
    list(paced(msgs, None, sleep=sleep, clock=lambda: now[0]))
    assert waits == []


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, fn: Any) -> FakeFuture:
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = False
        self.fail_every = fail_every

    def send(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        bad = self.fail_every and len(self.sent) % self.fail_every == 0
        return FakeFuture(RuntimeError("broker down") if bad else None)

    def flush(self, timeout: float) -> None:
        self.flushed = True


def test_messages_go_to_the_prefixed_topics_in_order_and_are_flushed():
    """Each message goes to its topic with the configured prefix, in order, and the producer is flushed."""
    s = Settings(topic_prefix="t1", topics=Topics.with_prefix("t1"))
    msgs = [SimMessage("raw_hotline", b"a", b"1", T0), SimMessage("case_updates", b"b", b"2", T0)]
    fake = FakeProducer()
    report = produce_messages(s, msgs, 2, "max", producer=fake)
    assert fake.sent == [("t1.cityops.raw.hotline", b"a", b"1"), ("t1.cityops.case-updates", b"b", b"2")]
    assert fake.flushed and report.total == 2


def test_unacknowledged_messages_fail_the_run():
    """A send the broker did not acknowledge makes the run fail, after everything was flushed."""
    fake = FakeProducer(fail_every=2)
    msgs = [SimMessage("raw_iot", None, b"x", T0)] * 5
    with pytest.raises(RuntimeError, match="2 of 5 messages"):
        produce_messages(Settings(), msgs, 5, "max", producer=fake)
    assert fake.flushed


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(0, 40, allow_nan=False)), max_size=40),
       debounce=st.integers(1, 4))
def test_alarm_rule_agrees_with_the_worker(values, debounce):
    """The simulator's statement of hysteresis and debounce raises alarms exactly where the worker does."""
    th = Threshold("above", 15.0, 5.0, debounce)
    sensor = Sensor("S", "manhole_tilt", "P0101", 121.48, 31.26, th)
    state, raised = SensorState(), []
    for i, v in enumerate(values):
        if v is None:
            continue
        ev = Event(event_id=f"iot:S@{i}", source="iot", category="", occurred_at=T0 + timedelta(minutes=i),
                   sensor_id="S", sensor_type="manhole_tilt", value=v)
        if observe(state, ev, sensor).problem is not None:
            raised.append((i, v))
    assert alarms_of(values, th) == raised


def _args(**kw: Any) -> argparse.Namespace:
    base = dict(days=1.0, start=None, district="hongkou", sensors=100, reading_interval=15.0, seed=1,
                malformed_share=0.01, speed="max", out=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_cli_refuses_a_future_period_unless_realtime():
    """Producing fast needs a period in the past (the worker refuses future times); realtime starts now."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="future"):
        config_from_args(_args(start="2026-03-01", speed="x60"), now=now)
    live = config_from_args(_args(speed="realtime"), now=now)
    assert live.begin == now
    past = config_from_args(_args(), now=now)
    assert past.end <= now
    with pytest.raises(ConfigError, match="--sensors"):
        config_from_args(_args(sensors=70000), now=now)
