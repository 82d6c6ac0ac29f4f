"""Issue #10.2-4: ClickHouse stopped for 30 s, the Kafka broker restarted, and a second worker joining and
leaving, each in the middle of a stream: the worker never exits, the backlog drains, and every input message is
accounted for exactly once (the same accounting as the crash test, tests/chaos/harness.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Expected,
    all_problems,
    group_members,
    isolated,
    messages_of,
    produce_stream,
    progress_reached,
    service,
    stored_readings,
    stream,
    wait_drained,
)
from tests.support import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SMALL = {"sensors": 150, "hotline_per_day": 800, "seed": 21}


def test_clickhouse_down_for_30_seconds_mid_stream(tmp_path: Path) -> None:
    """The sink blocks and retries while the server is down (backpressure); nothing is lost or doubled. Half of
    the stream is produced while the server is down, so the worker has rows to store then however fast it read
    the first half."""
    sim = stream(**SMALL)
    expected = Expected.of(sim)
    messages = messages_of(sim)
    half = len(messages) // 2
    with isolated(tmp_path, sim, "chout") as p:
        produce_stream(p.settings, messages[:half])
        worker = p.start_worker(0)
        progress_reached(p, sum(expected.readings.values()) // 8, timeout_s=300)
        try:
            service("clickhouse", "stop")
            produce_stream(p.settings, messages[half:])
            time.sleep(30)
            assert worker.poll() is None, p.tail(0)
        finally:
            service("clickhouse", "start")
        wait_drained(p, timeout_s=400, alive=[worker])
        problems = all_problems(p, expected)
        assert not problems, "\n".join(problems)
        assert "sink: insert into" in p.logs() and "retrying" in p.logs()     # it did wait, not skip
        assert worker.poll() is None


def test_kafka_broker_restart_mid_stream(tmp_path: Path) -> None:
    """The broker goes away and comes back while the worker is busy; half of the stream is produced after the
    restart: the worker reconnects and processes both halves."""
    sim = stream(**SMALL)
    expected = Expected.of(sim)
    messages = messages_of(sim)
    half = len(messages) // 2
    with isolated(tmp_path, sim, "kafrs") as p:
        produce_stream(p.settings, messages[:half])
        worker = p.start_worker(0)
        progress_reached(p, sum(expected.readings.values()) // 6, timeout_s=300)
        try:
            service("kafka", "stop")
            time.sleep(5)
        finally:
            service("kafka", "start")
        produce_stream(p.settings, messages[half:])
        wait_drained(p, timeout_s=500, alive=[worker])
        problems = all_problems(p, expected)
        assert not problems, "\n".join(problems)
        assert worker.poll() is None, p.tail(0)


def test_a_second_worker_joins_and_leaves_mid_stream(tmp_path: Path) -> None:
    """Two rebalances (join, then leave) while input keeps arriving: no message lost, none counted twice.

    The input comes in three parts, so that each rebalance happens with messages in flight however fast the
    worker is: the first before the second worker joins, the second while it joins, the third as it leaves.
    After the join both workers are in both groups and the group reads everything sent so far (a stall after
    a rebalance fails here). How much was stored before the join is not asserted: a fast worker may store the
    second part as quickly as it is produced."""
    sim = stream(**SMALL)
    expected = Expected.of(sim)
    total = sum(expected.readings.values())
    messages = messages_of(sim)
    third = len(messages) // 3
    with isolated(tmp_path, sim, "rebal") as p:
        produce_stream(p.settings, messages[:third])
        first = p.start_worker(0)
        progress_reached(p, total // 10, timeout_s=300)
        second = p.start_worker(1)
        produce_stream(p.settings, messages[third:2 * third])
        assert wait_for(lambda: set(group_members(p).values()) == {2}, 300), (group_members(p), p.logs()[-4000:])
        wait_drained(p, timeout_s=300, alive=[first, second])
        assert stored_readings(p) > total // 10
        assert second.poll() is None, p.tail(1)
        p.stop_all_but(first)
        produce_stream(p.settings, messages[2 * third:])
        wait_drained(p, timeout_s=400, alive=[first])
        problems = all_problems(p, expected)
        assert not problems, "\n".join(problems)
        assert second.returncode is not None and first.poll() is None
