"""A stage's state restored from its changelog when partitions arrive (pipeline.runtime.consumer): up to the
offsets that are stable once the previous owner's last transaction has ended."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.runtime.changelog import ChangelogTable, Latest
from pipeline.runtime.fastclient import LEAN, install_lean_records
from pipeline.runtime.instance import TRANSACTION_TIMEOUT_MS

log = logging.getLogger("cityops.worker")


async def restore_changelog(settings: Settings, group: str, table: ChangelogTable[Any], partitions: list[int]) -> int:
    """Load `partitions` of `table` from its changelog, from the beginning to the end offsets of now."""
    consumer = AIOKafkaConsumer(client_id=f"{group}-restore", enable_auto_commit=False,
                                isolation_level="read_committed",
                                **({"key_deserializer": LEAN} if install_lean_records() else {}),
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
                                **settings.aiokafka_options())
    await consumer.start()
    n = 0
    try:
        tps = [TopicPartition(table.topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await settled_ends(settings, group, consumer, tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp for tp in tps if ends[tp] > 0}
        latest = {tp: Latest() for tp in left}      # each key's last version, decoded once at the end
        while left:
            for tp, batch in (await consumer.getmany(*left, timeout_ms=500, max_records=50_000)).items():
                latest[tp].add([(r.key or b"", r.value) for r in batch if r.offset < ends[tp]])
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        for tp, one in latest.items():
            one.apply(table, tp.partition)
            n += one.records
    finally:
        await consumer.stop()
    log.info("%s: restored %d changelog records of %s partitions %s", group, n, table.topic, partitions)
    return n

async def settled_ends(settings: Settings, group: str, consumer: AIOKafkaConsumer,
                       tps: list[TopicPartition]) -> dict[Any, int]:
    """Where to restore up to: the last stable offsets (`consumer` reads committed), once every transaction
    on `tps` has ended. The previous owner's last checkpoint may still be committing when its partitions
    arrive here: Kafka writes the commit markers after the commit returns, and until they land the stable
    offset stops short of that checkpoint's state. Restoring then would lose that state while the group
    resumes after it. A transaction left open by a dead process ends within the transaction timeout."""
    probe = AIOKafkaConsumer(client_id=f"{group}-restore-probe", **settings.aiokafka_options())
    await probe.start()
    try:
        highs = await probe.end_offsets(tps)              # read uncommitted: markers included
    finally:
        await probe.stop()
    deadline = time.monotonic() + TRANSACTION_TIMEOUT_MS / 1000 + 10
    ends = await consumer.end_offsets(tps)
    while any(ends[tp] < highs[tp] for tp in tps) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(tps)
    if any(ends[tp] < highs[tp] for tp in tps):
        log.warning("%s: a transaction on %s is still open after the transaction timeout; restoring what "
                    "is committed", group, sorted(tp.partition for tp in tps if ends[tp] < highs[tp]))
    return dict(ends)
