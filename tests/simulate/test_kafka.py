"""`produce_simulation` against the real broker: every message arrives, on the prefixed topics, unchanged."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.runtime.topics import ensure_topics
from pipeline.simulate import simulate
from pipeline.simulate.produce import produce_simulation
from tests.simulate.conftest import small_config


def _read_all(settings: Settings, topic: str, n: int, timeout_s: float = 60.0) -> list[bytes]:
    """Raw values of `topic` from the beginning until `n` were read (malformed ones are not JSON)."""
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        got: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got += [m.value for m in batch]
        return got
    finally:
        consumer.close()


@pytest.mark.kafka
def test_a_simulated_quarter_day_arrives_on_the_broker(isolated_settings, world):
    """Each topic receives exactly the simulation's messages for it, byte for byte."""
    sim = simulate(small_config(days=0.25, sensors=20, hotline_per_day={"310109": 200}, hotspots=1), world)
    ensure_topics(isolated_settings)
    report = produce_simulation(isolated_settings, sim, "max")
    expected = Counter(m.topic for m in sim.messages())
    t = isolated_settings.topics
    assert report.sent == {getattr(t, k): v for k, v in expected.items()}
    for field in ("raw_hotline", "case_updates", "raw_iot"):
        want = [m.value for m in sim.messages() if m.topic == field]
        got = _read_all(isolated_settings, getattr(t, field), len(want))
        assert sorted(got) == sorted(want), field
