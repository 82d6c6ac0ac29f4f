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


def test_a_stages_outputs_land_where_send_puts_them_in_order(tmp_path: Path) -> None:
    """`Outbox` produces a batch's outputs as record batches per partition: against the real broker, each key is on
    the partition the Java client's murmur2 gives it (as `send` with the default partitioner puts it), each
    partition's records in the order they were added, keyless ones on some partition, a record given a partition
    on that one whatever its key (the ingest's progress marks), and a record larger than a batch in its place."""
    from aiokafka.partitioner import DefaultPartitioner

    from pipeline.runtime.fastclient import KeyPartitioner, Outbox

    s = prepared_settings("o", tmp_path)
    topics = [f"{s.app_id}-test-out5", f"{s.app_id}-test-out3"]
    admin = KafkaAdminClient(**s.kafka_client_options())  # type: ignore[arg-type]
    try:
        admin.create_topics([NewTopic(name=t, num_partitions=n, replication_factor=1)
                             for t, n in zip(topics, (5, 3), strict=True)])
    finally:
        admin.close()
    sent: list[tuple[str, bytes | None, bytes]] = []
    given: dict[bytes, int] = {}        # value -> the partition it was given
    for i in range(4000):
        key = None if i % 50 == 0 else f"grid-{i % 333}".encode()
        value = (b"z" * (CHANGELOG_BATCH_BYTES + 1000)) if i == 1234 else f"{i}".encode() * 20
        if i % 97 == 3:
            key, given[value] = b"~marks", i % 3
        sent.append((topics[i % 2], key, value))

    async def write() -> None:
        producer = AIOKafkaProducer(acks="all", enable_idempotence=True, partitioner=KeyPartitioner(),
                                    max_batch_size=CHANGELOG_BATCH_BYTES, max_request_size=4 << 20,
                                    **s.aiokafka_options())
        await producer.start()
        try:
            outbox = Outbox(producer)
            futures = []
            for n, (topic, key, value) in enumerate(sent):
                outbox.add(topic, value, key, given.get(value))
                if n % 1500 == 1499:            # several flushes, as several batches of a stage
                    futures += await outbox.flush()
            futures += await outbox.flush()
            assert len(outbox) == 0
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(write())
    default = DefaultPartitioner()
    for topic, n in zip(topics, (5, 3), strict=True):
        got = read_topic(s, topic)
        assert sum(map(len, got.values())) == sum(1 for t, _, _ in sent if t == topic)
        placed = {(m.key, m.value): p for p, msgs in got.items() for m in msgs}
        for t, key, value in sent:
            if t == topic and value in given:
                assert placed[(key, value)] == given[value], value
            elif t == topic and key is not None:
                assert placed[(key, value)] == default(key, list(range(n)), list(range(n))), key
        for p, msgs in got.items():
            want = [value for t, key, value in sent if t == topic and (key, value) in placed
                    and placed[(key, value)] == p]
            assert [m.value for m in msgs] == want, (topic, p)
