"""Helpers for integration tests against the real broker and server: produce, consume, run a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.config import ROOT, Settings


def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Send every (key, value) and wait until the broker acknowledged all of them."""
    producer = KafkaProducer(linger_ms=5, **settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def consume(settings: Settings, topic: str, until: Callable[[list[dict[str, Any]]], bool],
            timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """Read `topic` from the beginning (every partition) until `until(messages)` holds or the time is up."""
    consumer = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=500,
                             **settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + timeout_s
        parts: set[int] | None = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.5)
        if parts is None:
            return []
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got += [orjson.loads(m.value) for m in batch]
            if until(got):
                return got
        return got
    finally:
        consumer.close()


def wait_for(check: Callable[[], bool], timeout_s: float = 90.0, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return False


@contextmanager
def running_worker(settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None,
                   stage: str = "all") -> Iterator[subprocess.Popen[bytes]]:
    """Start `cityops worker` as a subprocess with these settings; stop it (TERM, then KILL) afterwards."""
    env = {**os.environ, **settings.to_env(), **(extra_env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "warn",
                                 "--stage", stage],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prepared_settings(letter: str, var_dir: Path) -> Settings:
    """Settings of their own (topic prefix, consumer groups, ClickHouse database `cityops_<tag>`) for one test
    module, with the topics created and the schema migrated."""
    import uuid
    from dataclasses import replace

    from pipeline.config import Topics
    from pipeline.runtime.topics import ensure_topics
    from pipeline.sink.migrate import migrate

    tag = letter + uuid.uuid4().hex[:10]
    s = replace(Settings.from_env(), clickhouse_database=f"cityops_{tag}", topic_prefix=tag,
                topics=Topics.with_prefix(tag), app_id=f"cityops-{tag}", var_dir=var_dir)
    ensure_topics(s)
    migrate(s)
    return s
