"""The notifier as it runs: a `cityops notify` process against the real Kafka broker and ClickHouse, delivering to
real receivers (pipeline.notify.inbox served in the test), killed, restarted, starved of its receiver, and fed
a bad targets file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.config import ROOT, Settings
from pipeline.notify.state import ledger_topic
from pipeline.runtime.topics import ensure_topics
from pipeline.sink.migrate import migrate
from pipeline.sink.transport import ClickHouse
from tests.notify.support import CHANNELS, InboxServer, assignment, expected_keys, targets_yaml, write_targets
from tests.support import produce, stop_process, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


@pytest.fixture
def notify_settings(isolated_settings: Settings, tmp_path: Path) -> Settings:
    s = replace(isolated_settings, notify_targets=tmp_path / "targets.yaml", notify_backoff_s=0.5,
                notify_backoff_cap_s=5.0)
    ensure_topics(s)
    migrate(s)
    return s


@pytest.fixture
def inbox() -> Iterator[InboxServer]:
    server = InboxServer()
    yield server
    server.close()


@contextmanager
def notifier(settings: Settings, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`cityops notify` as a subprocess with these settings (INFO log to `log`); stopped with SIGTERM after."""
    full = {**os.environ, **settings.to_env(), **env}
    with log.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "notify", "--loglevel", "info"], cwd=ROOT,
                                env=full, stdout=fh, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def send(settings: Settings, assignments: list[dict[str, Any]]) -> None:
    produce(settings, settings.topics.assignments, [(a["team"].encode(), orjson.dumps(a)) for a in assignments])


def ledger(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest record of every delivery in the notifier's changelog."""
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        topic = ledger_topic(settings)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[str, dict[str, Any]] = {}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    if r.value is not None:
                        out[r.key.decode()] = orjson.loads(r.value)
        return out
    finally:
        consumer.close()


def stored(settings: Settings, sql: str) -> int:
    db = ClickHouse(settings)
    try:
        return int(db.execute(sql)[0][0])
    finally:
        db.close()


def settled(inbox: InboxServer, want: int, quiet_s: float = 3.0, timeout_s: float = 120.0) -> bool:
    """Wait until the receiver has `want` distinct deliveries and nothing more arrived for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(inbox.inbox.received)
        if n != last:
            last, since = n, time.monotonic()
        elif len(inbox.inbox.applied) >= want and time.monotonic() - since >= quiet_s:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_mid_stream_and_replayed_assignments_deliver_each_message_once(
        notify_settings: Settings, tmp_path: Path) -> None:
    """900 deliveries (300 gas leaks: WeCom, SMS, signed DingTalk); the notifier is killed with SIGKILL while
    delivering, the worker replays 100 assignments (same ids), the notifier restarts: every delivery arrives,
    and exactly once, except those whose request was on the wire at the kill (recorded `interrupted`), which
    arrive at most twice with the same idempotency key (the receiver applies them once)."""
    server = InboxServer(delay_s=0.1)           # a slow receiver: the kill lands mid-stream
    try:
        s = notify_settings
        write_targets(s.notify_targets, targets_yaml(server.url))
        batch = [assignment(n) for n in range(300)]
        want = set().union(*(expected_keys(a, CHANNELS) for a in batch))
        send(s, batch)
        log = tmp_path / "notify.log"
        with notifier(s, log) as first:
            assert wait_for(lambda: len(server.inbox.applied) >= 150, 90, 0.02), log.read_text()[-3000:]
            first.send_signal(signal.SIGKILL)
            first.wait()
        at_kill = len(server.inbox.applied)
        assert at_kill < len(want), "the kill came after the last delivery: nothing was tested"
        send(s, batch[:100])                    # a worker crash re-sends assignments with the same ids
        with notifier(s, log):
            assert settled(server, len(want)), log.read_text()[-3000:]
        counts = server.inbox.counts()
        records = ledger(s)
        interrupted = {k for k, r in records.items() if any(a["status"] == "interrupted" for a in r["attempts"])}
        assert set(counts) == want
        assert all(r["state"] == "delivered" for k, r in records.items() if k in want)
        twice = {k for k, n in counts.items() if n > 1}
        assert twice <= interrupted and max(counts.values()) <= 2, (twice - interrupted, max(counts.values()))
        assert len(interrupted) <= 3 * 16          # at most a channel's connections were on the wire
        assert len(server.inbox.applied) == len(want)
        assert wait_for(lambda: stored(s, "SELECT uniqExact(delivery_id) FROM notifications "
                                          "WHERE status = 'delivered'") == len(want), 30)
    finally:
        server.close()


def test_a_receiver_down_for_20_seconds_gets_every_message_once_when_it_is_back(
        notify_settings: Settings, inbox: InboxServer, tmp_path: Path) -> None:
    """The receiver goes away for 20 s; the notifier retries with capped backoff (no dead letter); when the
    receiver is back every delivery arrives, each once; ClickHouse has the failed attempts and the successes."""
    s = notify_settings
    write_targets(s.notify_targets, targets_yaml(inbox.url))
    warm = [assignment(1000)]
    log = tmp_path / "notify.log"
    with notifier(s, log):
        send(s, warm)
        assert settled(inbox, 3, quiet_s=0.5, timeout_s=90), log.read_text()[-3000:]
        inbox.stop()
        batch = [assignment(n) for n in range(40)]
        send(s, batch)
        time.sleep(20)
        assert len(inbox.inbox.received) == 3
        inbox.start()
        want = set().union(*(expected_keys(a, CHANNELS) for a in warm + batch))
        assert settled(inbox, len(want), timeout_s=60), log.read_text()[-3000:]
    counts = inbox.inbox.counts()
    assert set(counts) == want and set(counts.values()) == {1}
    assert wait_for(lambda: stored(s, "SELECT uniqExact(delivery_id) FROM notifications "
                                      "WHERE status = 'delivered'") == len(want), 30)
    assert stored(s, "SELECT countIf(status = 'retry') FROM notifications") >= len(want) - 3
    assert stored(s, "SELECT countIf(status = 'failed') FROM notifications") == 0


def test_a_bad_targets_file_is_refused_with_file_line_and_key_and_the_running_version_stays(
        notify_settings: Settings, inbox: InboxServer, tmp_path: Path) -> None:
    """While running, a targets file with an unknown key is refused (logged with file:line:column and the key)
    and deliveries go on with the running version; a valid change is taken within seconds."""
    s = notify_settings
    path = write_targets(s.notify_targets, targets_yaml(inbox.url))
    log = tmp_path / "notify.log"
    desk = ("hotline-desk",)
    with notifier(s, log):
        send(s, [assignment(1, notify=desk, priority=3)])
        assert settled(inbox, 1, quiet_s=0.2, timeout_s=90), log.read_text()[-3000:]
        bad = targets_yaml(inbox.url).replace("  hotline-desk:\n    channels:", "  hotline-desk:\n    chanels:")
        write_targets(path, bad)
        line = bad.splitlines().index("    chanels:") + 1
        assert wait_for(lambda: f"{path}:{line}:5: targets.hotline-desk.chanels: unknown key" in log.read_text(),
                        30), log.read_text()[-3000:]
        send(s, [assignment(2, notify=desk, priority=3)])
        assert settled(inbox, 2, quiet_s=0.2, timeout_s=30), log.read_text()[-3000:]
        write_targets(path, targets_yaml(inbox.url).replace("/webhook/hotline-desk", "/webhook/hotline-desk-v2"))
        time.sleep(3)
        send(s, [assignment(3, notify=desk, priority=3)])
        assert settled(inbox, 3, quiet_s=0.2, timeout_s=30), log.read_text()[-3000:]
    assert [r.name for r in inbox.inbox.received] == ["hotline-desk", "hotline-desk", "hotline-desk-v2"]
