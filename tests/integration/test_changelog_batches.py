"""A checkpoint writes its state changes to the changelog in whole record batches (`BatchService._send_changes`):
against the real broker, every change reaches its partition, in order, tombstones and oversized values included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from pipeline.runtime.consumer import CHANGELOG_BATCH_BYTES, BatchService
from tests.chaos.harness import read_topic
from tests.support import prepared_settings

pytestmark = [pytest.mark.kafka]


def test_state_changes_reach_their_changelog_partitions_whole_and_in_order(tmp_path: Path) -> None:
    s = prepared_settings("c", tmp_path)
    topic = f"{s.app_id}-test-changelog"
    admin = KafkaAdminClient(**s.kafka_client_options())  # type: ignore[arg-type]
    try:
        admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1,
                                      topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    changes: list[tuple[str, tuple[int, bytes, bytes | None]]] = []
    for i in range(6000):               # about 2 MB: several batches per partition
        changes.append((topic, (i % 3, f"k{i % 2500}".encode(), f"{i}:{'x' * 300}".encode())))
        if i % 97 == 0:
            changes.append((topic, (i % 3, f"k{(i + 1) % 2500}".encode(), None)))     # a deletion
        if i == 3001:                   # larger than a batch: a batch of its own, in its place
            changes.append((topic, (i % 3, b"big", b"y" * (CHANGELOG_BATCH_BYTES + 100_000))))

    async def write() -> None:
        txn = AIOKafkaProducer(transactional_id=f"{s.app_id}-test-txn", max_batch_size=CHANGELOG_BATCH_BYTES,
                               max_request_size=16 * 1024 * 1024, **s.aiokafka_options())
        await txn.start()
        try:
            svc = BatchService(SimpleNamespace(settings=s))
            svc._txn = txn
            async with txn.transaction():
                await svc._send_changes(changes)
        finally:
            await txn.stop()

    asyncio.run(write())
    got = read_topic(s, topic)
    for partition in range(3):
        want = [(key, value) for _, (p, key, value) in changes if p == partition]
        assert [(m.key, m.value) for m in got.get(partition, [])] == want, partition
