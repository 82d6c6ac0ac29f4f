"""What both worker stages share: a consumer group read in large batches, outputs sent as soon as a batch is
processed, and checkpoints that store rows, then state, then offsets.

Each stage (pipeline.runtime.ingest, pipeline.runtime.cases) is a `BatchService`: a mode service (faust-streaming's
service layer) around an aiokafka consumer and producer (Faust's Kafka client). It reads with `getmany`, thousands
of messages a call, and hands each batch to the stage's `process`, which runs the pipeline.stages.ingest functions and
queues its outputs: messages are produced at once (their futures kept), ClickHouse rows wait in `pending`.
Faust's agents were the first design; their per-message stream machinery and a broker round trip per small batch
held one worker near 560 events/s (issue #9), so the stages consume batches themselves.

Checkpoint, every `commit_interval_s` (or sooner when many rows wait):

1. every message produced since the last checkpoint is acknowledged by the broker and every row is stored in
   ClickHouse;
2. then, in one Kafka transaction, each state table's changes are written to its compacted changelog topic and
   the consumed offsets are committed: the state a worker restores is always exactly the state at the offsets
   it resumes from, never part of a checkpoint (the changelog is read `read_committed`).

The transactional id is `<group>-<host>-<slot>`: a process takes the lowest slot no live process on its host
holds (a lock file under `CITYOPS_VAR/run`), so a worker restarted after a crash takes over its predecessor's id
and Kafka aborts the transaction it left open at once, instead of after the transaction timeout.

A checkpoint is stored while the next batches are processed; the table changes it writes are serialised when it
starts, at exactly its offsets; one checkpoint is stored at a time, in order. A crash replays from the last
commit with the state of that commit, so the replay computes exactly what the first attempt computed: outputs are
written again with the same stable ids and the same content (nothing counts twice).
On a rebalance the stage checkpoints and waits before giving partitions up, and restores the state of the
partitions it gets from their changelog before reading them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from pipeline.config import Settings
from pipeline.model.records import SinkBatch
from pipeline.runtime.align import Aligner
from pipeline.runtime.changelog import ChangelogTable
from pipeline.runtime.components import Components
from pipeline.runtime.fastclient import LEAN, KeyPartitioner, install_lean_records
from pipeline.runtime.instance import TRANSACTION_TIMEOUT_MS, InstanceSlot, evict_predecessor
from pipeline.runtime.restore import restore_changelog

log = logging.getLogger("cityops.worker")

EXIT_DEADLETTER_LIMIT = 3      # the worker's exit status when the dead-letter cap stopped it
EXIT_STAGE_FAILED = 4          # a batch failed (e.g. an output could not be delivered): exit, replay after restart
CHANGELOG_BATCH_BYTES = 512 * 1024  # a checkpoint's state changes go out in record batches of up to this size
# (the broker takes messages, that is batches, of up to 1 MiB by default)


@dataclass
class Pending:
    """What was produced and computed since the last checkpoint."""

    sends: list[asyncio.Future[Any]] = field(default_factory=list)
    rows: SinkBatch = field(default_factory=SinkBatch)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    since: float | None = None
    messages: int = 0


class BatchService(Service):
    """One stage's consumer group; subclasses set `group`, `topics`, `tables` and implement `process`."""

    group: str
    topics: list[str]
    tables: dict[str, ChangelogTable[Any]]   # input topic -> its state table (partitioned like it)

    def __init__(self, components: Components, *, batch: int | None = None, commit_interval_s: float | None = None,
                 max_rows: int | None = None, on_fatal: Callable[[int, str], None] | None = None) -> None:
        super().__init__()
        self.c = components
        self.settings: Settings = components.settings
        self.batch = batch or self.settings.batch
        self.commit_interval_s = commit_interval_s if commit_interval_s is not None else self.settings.commit_interval_s
        self.max_rows = max_rows or self.settings.max_pending
        self.owned: set[TopicPartition] = set()
        self.pending = Pending()
        self.lock = asyncio.Lock()
        self.checkpoints = 0
        self.restored = 0
        self._on_fatal = on_fatal or fatal
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self.partition_counts: dict[str, int] = {}     # input topic of a table -> its partitions
        self.under_replicated: list[str] = []            # topics replicated less than configured, at start
        self._txn: AIOKafkaProducer | None = None          # transactional: changelog writes and offsets
        self._slot: InstanceSlot | None = None
        self.aligner: Aligner | None = None    # a stage that reads several sources sets one (pipeline.runtime.align)
        self._ends_unknown: set[TopicPartition] = set()     # assigned partitions whose end offset is not known
        self._ends_retry_at = 0.0
        self._stalled = False
        self.evicted: str | None = None     # the answer to removing this slot's previous member, if one was left

    # -- what a stage implements -------------------------------------------------------------------------------

    async def process(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Process one batch (records of owned partitions only): queue sends and rows, update the tables."""
        raise NotImplementedError

    def partitions_lost(self, partitions: set[TopicPartition]) -> None:
        """The stage's own caches of `partitions` (its tables are dropped by the service)."""

    def partitions_restored(self, partitions: set[TopicPartition]) -> None:
        """`partitions` were just assigned and their tables restored (under the lock, before any is read)."""

    async def after_round(self) -> None:
        """After each fetch and its processing, under the lock (before a checkpoint may start)."""

    def failure(self, err: Exception) -> tuple[int, str] | None:
        """(exit status, reason) for an error that stops the worker in a specific way, else None."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        opts = self.settings.aiokafka_options()
        await asyncio.get_running_loop().run_in_executor(None, self._ensure_topics)
        # idempotent: a batch is retried until the broker takes it, however long an outage lasts (a plain
        # producer gives up after its request timeout, 40 s, and fails the stage), and never written twice
        self._producer = AIOKafkaProducer(client_id=f"{self.group}-producer", acks="all", linger_ms=5,
                                          enable_idempotence=True, partitioner=KeyPartitioner(),
                                          max_request_size=4 * 1024 * 1024, **opts)
        await self._producer.start()
        self._slot = InstanceSlot.take(self.settings.var_dir / "run", self.group)
        self._txn = AIOKafkaProducer(client_id=f"{self.group}-checkpoints", linger_ms=5,
                                     transactional_id=self._slot.transactional_id,
                                     transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                                     max_batch_size=CHANGELOG_BATCH_BYTES, max_request_size=16 * 1024 * 1024, **opts)
        await self._txn.start()
        lean = install_lean_records()
        self._consumer = AIOKafkaConsumer(
            client_id=f"{self.group}-consumer", group_id=self.group, enable_auto_commit=False,
            **({"key_deserializer": LEAN} if lean else {}),
            auto_offset_reset="earliest", max_poll_records=self.batch, fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=self.settings.fetch_partition_bytes,
            **opts)
        await self._consumer.start()
        await self._evict_predecessor()
        self._consumer.subscribe(list(self.topics), listener=_Listener(self))

    async def _evict_predecessor(self) -> None:
        """Take a killed predecessor's place in the group at once (pipeline.runtime.instance.evict_predecessor)."""
        assert self._slot is not None and self._consumer is not None
        self.evicted = await evict_predecessor(self._consumer, self.group, self._slot)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self.lock:
                try:
                    await self._checkpoint()
                except Exception as err:   # the replay after the restart covers what this did not store
                    log.warning("%s: last checkpoint at shutdown failed: %s", self.group, err)
            await self._consumer.stop()     # leaves the group
            if self._slot is not None:
                self._slot.forget_member()
        for producer in (self._producer, self._txn):
            if producer is not None:
                await producer.stop()
        if self._slot is not None:
            self._slot.release()

    @Service.task
    async def _run(self) -> None:
        try:
            while not self.should_stop:
                assert self._consumer is not None
                records, fetched = await self._next_records()
                async with self.lock:
                    owned = {tp: batch for tp, batch in records.items() if tp in self.owned and batch}
                    if owned:
                        # fetched before a rebalance took a partition away: its new owner reads it
                        await self.process(owned)
                        for tp, batch in owned.items():
                            self.pending.offsets[tp] = batch[-1].offset + 1
                            self.pending.messages += len(batch)
                            self.c.counters.add(tp.topic, len(batch))
                        if self.pending.since is None:
                            self.pending.since = time.monotonic()
                    if self.aligner is not None and self.aligner.held.keys() - self.owned:
                        self.aligner.drop(self.aligner.held.keys() - self.owned)  # fetched as it was revoked
                    await self.after_round()
                    await self.tick(drained=not fetched and not records
                                    and not (self.aligner is not None and self.aligner.held))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if self.should_stop:        # the consumer was stopped under a waiting fetch: a normal shutdown
                return
            special = self.failure(err)
            if special is not None:
                self._on_fatal(*special)
            else:
                log.exception("%s failed", self.group)
                self._on_fatal(EXIT_STAGE_FAILED, f"{self.group}: {type(err).__name__}: {err}")

    async def _next_records(self) -> tuple[dict[TopicPartition, list[Any]], bool]:
        """The next records to process, and whether the fetch found any. With an aligner (pipeline.runtime.align), the
        records of partitions ahead in event time wait (held) while the others catch up."""
        assert self._consumer is not None
        a = self.aligner
        if a is None:
            records = await self._consumer.getmany(timeout_ms=100, max_records=self.batch)
            return records, bool(records)
        new = self.owned - a.next_offset.keys()
        self._ends_unknown = {tp for tp in self._ends_unknown | new
                              if tp in self.owned and tp not in a.end and self._consumer.highwater(tp) is None}
        if self._ends_unknown and time.monotonic() >= self._ends_retry_at:
            # how far behind each new partition starts: its records are on their way, the others wait for them;
            # while unknown, the others wait for it only the idle time, and the stage asks again each second
            try:
                ends = await asyncio.wait_for(self._consumer.end_offsets(list(self._ends_unknown)), 10)
            except Exception as err:
                log.warning("%s: end offsets of %d partitions unknown (%s)", self.group, len(self._ends_unknown),
                            err)
                ends = {}
                self._ends_retry_at = time.monotonic() + 1.0
            for tp, end in ends.items():
                a.end[tp] = end
            self._ends_unknown -= ends.keys()
        for tp in new:
            try:
                a.track(tp, await self._consumer.position(tp))
            except Exception:           # revoked meanwhile: the next round sees the new assignment
                break
        if not self.owned:
            # Nothing owned yet: the assignment is under way (its callback restores the tables). A fetch now
            # would take records of every partition the consumer was given, before the aligner knows which
            # ones it must wait for: the few records of the small topics would go first (as CI saw: a patrol
            # report opened the case its sensor's alarm opens).
            await asyncio.sleep(0.05)
            return {}, False
        # only partitions the aligner tracks: one assigned since `new` was taken is tracked on the next round
        parts = a.fetchable(self.owned & a.next_offset.keys())
        fetched: dict[TopicPartition, list[Any]] = {}
        if parts:
            # with records held and released last time, look for more without waiting
            wait = 0 if a.held and not self._stalled else 100
            started = time.monotonic()
            fetched = await self._consumer.getmany(*parts, timeout_ms=wait, max_records=self.batch)
            a.add(fetched, parts, time.monotonic() - started)
        elif self._stalled:
            await asyncio.sleep(0.01)       # everything held waits for a partition's idle time to pass
        out = a.release(self._consumer.highwater)
        self._stalled = bool(a.held) and not out
        return out, bool(fetched)

    async def tick(self, drained: bool = False) -> None:
        """After each fetch (under the lock): start a checkpoint when one is due, surface a finished one's error.
        `drained`: the fetch found nothing new (it waited its timeout), so the stage has caught up with its input.

        While the previous checkpoint is still being stored, processing goes on and the next one simply starts
        later, unless `max_rows` rows or messages are waiting: then the stage waits for it (backpressure)."""
        if self._in_flight is not None:
            if self._in_flight.done():
                await self._finish_checkpoint()     # surfaces its error, if it failed
            elif len(self.pending.rows) < self.max_rows and len(self.pending.sends) < self.max_rows:
                return
        if self._due(drained):
            await self._checkpoint(wait=False)

    # -- outputs -----------------------------------------------------------------------------------------------

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        """Produce now; the checkpoint waits for the acknowledgement."""
        assert self._producer is not None
        self.pending.sends.append(await self._producer.send(topic, value=value, key=key, partition=partition))

    # -- checkpoints -------------------------------------------------------------------------------------------

    def _due(self, drained: bool = False) -> bool:
        """A checkpoint is due when `max_rows` rows or messages wait, when the oldest has waited
        `commit_interval_s`, or as soon as the input is drained: batching more would only delay what is
        pending (the end of a burst reaches ClickHouse 0.4 s sooner), and an idle stage checkpoints at most
        once per fetch timeout."""
        p = self.pending
        if len(p.rows) >= self.max_rows or len(p.sends) >= self.max_rows:
            return True
        if p.since is None:
            return False
        return drained or time.monotonic() - p.since >= self.commit_interval_s

    async def _checkpoint(self, wait: bool = True) -> None:
        """Start storing what is pending and, with `wait`, wait until it is stored and committed. Without `wait`
        processing goes on; the next checkpoint waits for this one first, so they complete in order."""
        await self._finish_checkpoint()
        p, self.pending = self.pending, Pending()
        changes = [(table.topic, change) for table in self.tables.values() for change in table.take_changes()]
        if not p.offsets and not p.sends and not changes:
            return
        self._in_flight = asyncio.ensure_future(self._store(p, changes))
        if wait:
            await self._finish_checkpoint()

    async def _finish_checkpoint(self) -> None:
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _store(self, p: Pending, changes: list[tuple[str, tuple[int, bytes, bytes | None]]]) -> None:
        assert self._txn is not None
        loop = asyncio.get_running_loop()
        stored = loop.run_in_executor(None, self.c.sink.write, p.rows) if len(p.rows) else None
        await asyncio.gather(*p.sends, *([stored] if stored is not None else []))
        offsets = {tp: off for tp, off in p.offsets.items() if tp in self.owned}
        if changes or offsets:
            async with self._txn.transaction():      # commits (waiting for every record) or aborts on error
                await self._send_changes(changes)
                if offsets:
                    await self._txn.send_offsets_to_transaction(offsets, self.group)
        self.checkpoints += 1

    async def _send_changes(self, changes: list[tuple[str, tuple[int, bytes, bytes | None]]]) -> None:
        """Write state changes to their changelog partitions, in the open transaction, as whole record batches:
        a checkpoint writes a few thousand (a district's sensors), and one `send` per record cost the stage
        several per cent of its CPU."""
        assert self._txn is not None
        txn = self._txn
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for topic, (partition, key, value) in changes:
            by_partition.setdefault((topic, partition), []).append((key, value))
        for (topic, partition), records in by_partition.items():
            batch = txn.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # full: send it and start the next with this record (a batch takes its first one whatever
                    # its size, as the plain `send` does)
                    await txn.send_batch(batch, topic, partition=partition)
                    batch = txn.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise RuntimeError(f"{topic}[{partition}]: a new record batch refused a record")
            if batch.record_count():
                batch.close()
                await txn.send_batch(batch, topic, partition=partition)

    # -- partitions come and go --------------------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            if self.aligner is not None:
                self.aligner.drop(revoked)
            await self._checkpoint()
            for topic, table in self.tables.items():
                table.drop({tp.partition for tp in revoked if tp.topic == topic})
            self.partitions_lost(revoked)
            self.owned -= revoked

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            for topic, table in self.tables.items():
                new = sorted(tp.partition for tp in assigned if tp.topic == topic and tp not in self.owned)
                if new:
                    self.restored += await restore_changelog(self.settings, self.group, table, new)
            fresh = set(assigned) - self.owned
            self.owned = set(assigned)
            self.partitions_restored(fresh)
            member = getattr(getattr(self._consumer, "_coordinator", None), "member_id", None)
            if self._slot is not None and isinstance(member, str):
                self._slot.remember_member(member)

    def _ensure_topics(self) -> None:
        """The cityops topics, and each table's compacted changelog partitioned like its input topic."""
        from pipeline.runtime.topics import ensure_derived

        counts, self.under_replicated = ensure_derived(
            self.settings, {table.topic: source for source, table in self.tables.items()}, self.group)
        self.partition_counts.update(counts)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: BatchService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.service.assigned(set(assigned))


def fatal(status: int, reason: str) -> None:
    """Stop the whole process, loudly: a dead consumer in a live-looking process would read nothing. Nothing
    unstored was committed, so the replay after the restart (and a fix) loses nothing."""
    log.critical("stopping the worker: %s", reason)
    print(f"cityops worker: stopping: {reason}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(status)
