"""Speed-ups of the aiokafka client for the worker stages (pipeline.runtime.consumer): lean consumer records, a
partitioner that keeps each key's hash, and an outbox that produces a batch's outputs as whole record batches."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from pipeline.wire import Message


class LeanRecords:
    """Given as a consumer's `key_deserializer` (it returns the key unchanged), this asks for the consumer's
    records as `pipeline.wire.Message` (topic, partition, offset, value, key) instead of aiokafka's
    `ConsumerRecord`: that one is a dataclass of 11 fields in a `__dict__`, and building it took about a quarter
    of the consumer's CPU time per record (`make bench` input read alone: 6.0 µs a record, 4.3 with these).
    Stages read only those five fields. Other consumers in the process get `ConsumerRecord` as before."""

    def __call__(self, key: bytes | None) -> bytes | None:
        return key


LEAN = LeanRecords()


def install_lean_records() -> bool:
    """Route aiokafka's per-record constructor (`PartitionRecords._consumer_record`, aiokafka 0.11-0.14) to
    `Message` for consumers marked with `LEAN`; False when this aiokafka has no such method (records stay
    `ConsumerRecord`, which stages read just as well). Idempotent."""
    from aiokafka.consumer import fetcher

    original = getattr(fetcher.PartitionRecords, "_consumer_record", None)
    if original is None:
        return False
    if getattr(original, "cityops_lean", False):
        return True

    def _consumer_record(self: Any, tp: TopicPartition, rec: Any) -> Any:
        if self._key_deserializer is LEAN:
            return Message(tp.topic, tp.partition, rec.offset, rec.value, rec.key)
        return original(self, tp, rec)

    _consumer_record.cityops_lean = True  # type: ignore[attr-defined]
    fetcher.PartitionRecords._consumer_record = _consumer_record
    return True


class KeyPartitioner:
    """The default partitioner (murmur2 of the key, as the Java client computes it) with each key's hash kept:
    aiokafka's murmur2 is pure Python, and the keys a stage sends (grid keys, source topics) repeat. It took
    about 5 % of a worker's CPU before (py-spy, `make bench` throughput run). Keyless messages go to a random
    available partition, as with the default."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.limit:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class Outbox:
    """A stage's outputs of one batch, produced together: grouped by partition (the partitioner the producer was
    given, on the topic's partitions as the producer's metadata lists them, so a key lands where `send` puts
    it), each partition's records in the order they were added, as whole record batches (`create_batch`,
    `send_batch`). One future per record batch; a failed record batch fails its future, as `send` fails each
    record's.

    `AIOKafkaProducer.send` per record cost a stage about 6 % of its CPU (issue #23's profile): the topic's
    metadata looked up twice (each building a set of the topic's partitions), a future and a `TopicPartition`
    per record, and each record's future set again when its batch is acknowledged."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.records: list[tuple[str, bytes | None, bytes, int | None]] = []

    def __len__(self) -> int:
        return len(self.records)

    def add(self, topic: str, value: bytes, key: bytes | None, partition: int | None = None) -> None:
        """`partition` None: the key's, as the producer's partitioner picks it."""
        self.records.append((topic, key, value, partition))

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Hand everything added so far to the producer; the futures of its record batches."""
        records, self.records = self.records, []
        if not records:
            return []
        producer = self.producer
        partition_of = producer._partitioner
        cluster = producer.client.cluster
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value, partition in records:
            known = partitions.get(topic)
            if known is None:
                await producer.client._wait_on_metadata(topic)     # as `send` does, once per topic and flush
                known = partitions[topic] = (list(cluster.partitions_for_topic(topic)),
                                             list(cluster.available_partitions_for_topic(topic)))
            if partition is None:
                partition = partition_of(key, *known)
            by_partition.setdefault((topic, partition), []).append((key, value))
        futures = []
        for (topic, partition), batch_records in by_partition.items():
            batch = producer.create_batch()
            for key, value in batch_records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # full: send it and start the next with this record (a batch takes its first record whatever
                    # its size, as `send` does)
                    futures.append(await _enqueue(producer, batch, topic, partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise RuntimeError(f"{topic}[{partition}]: a new record batch refused a record")
            batch.close()
            futures.append(await _enqueue(producer, batch, topic, partition))
        return futures


async def _enqueue(producer: Any, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    """`send_batch`, waiting as long as the partition's previous batch is not taken by the sender. aiokafka gives
    up after its request timeout (40 s) with the batch not queued; `send` appends to a partition's open batch
    instead and waited only when it was full, so a broker outage longer than that did not stop the stage: nor
    does it here (the idempotent producer delivers what is queued when the broker is back)."""
    while True:
        try:
            return await producer.send_batch(batch, topic, partition=partition)   # type: ignore[no-any-return]
        except KafkaTimeoutError:
            continue
