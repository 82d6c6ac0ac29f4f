"""The cases stage: the internal located topic in (group `<app id>-cases`), assignments, case states and refusals
out, cases, events and transitions stored in ClickHouse (see pipeline.runtime.consumer for batches, checkpoints and
recovery).

State: every open or recently closed case of the sub-districts this worker owns, one record per case id, and the
updates parked for cases not seen yet (`<case id>#parked`), in the compacted changelog `<app id>-cases-state`. A
case lives on the partition of its book (its sub-district: docs/cases.md §1.1), the located partition its
reports come from. Replayed reports and updates
are recognised by their stable ids (pipeline.stages.cases), so a replay changes nothing.

Order: each located partition's items wait in a `pipeline.stages.order.Reorder` until the ingest group's progress
marks have passed their event time, and reach the books in event-time order (`CITYOPS_ORDER=off`: as they come).
The items held and the marks seen are state too, in the same table (`~held/<offset>`: the item's key, a NUL and
its bytes; `~marks`: the marks as pipeline.wire.encode_marks writes them), written at each checkpoint with the
offsets past them: a restart holds what the crashed process held, and reads on from where it had read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from mode import Service

from pipeline.model.cases import Case, CorrelationPolicy, case_from_json
from pipeline.model.events import CaseUpdate
from pipeline.runtime.changelog import ChangelogTable, json_bytes
from pipeline.runtime.components import Components, refresh
from pipeline.runtime.consumer import BatchService
from pipeline.runtime.malloc import trim
from pipeline.stages.cases import CaseBook
from pipeline.stages.lifecycle import Outcome
from pipeline.stages.order import Held, Reorder
from pipeline.wire import (
    MARKS_KEY,
    case_book_key,
    decode_located,
    decode_marks,
    encode_marks,
    encode_update,
    located_time,
    refusal_json,
)

log = logging.getLogger("cityops.cases")

PARKED = "#parked"   # table key suffix: updates that arrived before their case, kept with the grid's cases
HELD = "~held/"      # table key prefix: a located item waiting for the watermark (`~...`: never a case id)
MARKS = "~marks"     # table key: the progress marks a located partition has seen


def book_partition(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives a book key: where its located reports go."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _case_bytes(value: bytes | Case) -> bytes:
    """A cases-table value as its changelog record: stored bytes as they are, a live case encoded now."""
    return value if isinstance(value, bytes) else json_bytes(value.to_dict())


def _same(raw: bytes) -> bytes | Case:
    return raw


class BookCache:
    """The case books this worker owns, in memory, backed by the stage's table.

    A book is built from the table the first time its key is seen (after a start or a rebalance, when the
    cache is cleared) and kept; after each batch only the cases that changed are written back.

    The table holds each case once: as the bytes of its changelog record until its book is built, then as the
    book's own `Case` (encoded when a checkpoint takes its change). Keeping the bytes beside the decoded cases
    cost 2.2 KB a case, a third of a month of cases' memory (issue #23: 10,807 cases of the bench's month,
    tracemalloc: 23.7 MiB of bytes beside 76 MiB of books).
    """

    def __init__(self, table: ChangelogTable[bytes | Case], policy: CorrelationPolicy,
                 partition_of: Any) -> None:
        self.table = table
        self.policy = policy
        self.partition_of = partition_of          # book key -> partition
        self.books: dict[str, CaseBook] = {}
        self._by_book: dict[str, list[str]] | None = None

    def clear(self) -> None:
        self.books.clear()
        self._by_book = None

    def all_keys(self) -> set[str]:
        return set(self._book_index()) | set(self.books)

    def _book_index(self) -> dict[str, list[str]]:
        if self._by_book is None:
            index: dict[str, list[str]] = {}
            for _, case_id in self.table.all_keys():
                if case_id.startswith("~"):
                    continue
                index.setdefault(case_book_key(case_id), []).append(case_id)
            self._by_book = index
        return self._by_book

    def load(self, keys: Iterable[str]) -> dict[str, CaseBook]:
        out: dict[str, CaseBook] = {}
        for key in keys:
            book = self.books.get(key)
            if book is None:
                partition = self.partition_of(key)
                ids = self._book_index().get(key, ())
                live = self.table.partition(partition)     # replacing bytes by their case is no change
                cases = []
                for cid in ids:
                    value = live.get(cid)
                    if value is None:
                        continue
                    if cid.endswith(PARKED):
                        assert isinstance(value, bytes)
                        continue
                    case = value if isinstance(value, Case) else case_from_json(value)
                    live[cid] = case
                    cases.append(case)
                book = CaseBook.from_cases(key, cases, self.policy)
                for cid in ids:
                    value = live.get(cid) if cid.endswith(PARKED) else None
                    if value:
                        assert isinstance(value, bytes)
                        updates = [decode_located(orjson.dumps(u)) for u in orjson.loads(value)]
                        book.parked[cid[: -len(PARKED)]] = [u for u in updates if isinstance(u, CaseUpdate)]
            out[key] = book
        return out

    def adopt(self, books: dict[str, CaseBook]) -> None:
        self.books.update(books)

    def persist(self, books: Iterable[CaseBook]) -> None:
        for book in books:
            partition = self.partition_of(book.key)
            for case in book.take_dirty():
                self.table.put(partition, case.case_id, case)
            for cid, updates in book.take_parked_dirty().items():
                if updates:
                    self.table.put(partition, cid + PARKED,
                                   json_bytes([orjson.loads(encode_update(u)) for u in updates]))
                else:
                    self.table.delete(partition, cid + PARKED)
            for gone in book.prune():
                self.table.delete(partition, gone)


class CasesService(BatchService):
    def __init__(self, components: Components, **kwargs: Any) -> None:
        super().__init__(components, **kwargs)
        t = self.settings.topics
        self.group = f"{self.settings.app_id}-cases"
        self.topics = [t.located]
        self.cases_table: ChangelogTable[bytes | Case] = ChangelogTable(f"{self.settings.app_id}-cases-state",
                                                                        _case_bytes, _same)
        self.tables = {t.located: self.cases_table}
        self.located_partitions = self.settings.partitions
        self._last_sla_check = 0.0
        self.books = BookCache(self.cases_table, components.cases.policy,
                               lambda key: book_partition(key, self.located_partitions))
        self.inputs: frozenset[tuple[str, int]] = frozenset()     # every input partition of the ingest stage
        self.orders: dict[int, Reorder] = {}                      # located partition -> its held items
        self._held_stored: dict[int, set[int]] = {}               # offsets of the held items in the table
        self._marks_dirty: set[int] = set()

    async def on_start(self) -> None:
        await super().on_start()
        # a case's partition is its book's on the located topic as it is, whatever the settings say now
        self.located_partitions = self.partition_counts.get(self.settings.topics.located, self.settings.partitions)

    def _ensure_topics(self) -> None:
        """As every stage, and every input partition of the ingest stage, whose marks the order waits for: known
        before the consumer subscribes (an assignment may come while `on_start` still awaits)."""
        from kafka import KafkaAdminClient

        from pipeline.runtime.topics import topic_partitions

        super()._ensure_topics()
        sources = list(self.settings.topics.sources())
        admin = KafkaAdminClient(client_id=f"{self.group}-admin", **self.settings.kafka_client_options())
        try:
            counts = topic_partitions(admin, sources)
        finally:
            admin.close()
        if set(counts) != set(sources):
            raise RuntimeError(f"input topics not found: {sorted(set(sources) - set(counts))}")
        self.inputs = frozenset((topic, p) for topic, n in counts.items() for p in range(n))

    def _order(self, partition: int) -> Reorder:
        order = self.orders.get(partition)
        if order is None:
            order = self.orders[partition] = Reorder(self.inputs)
        return order

    async def process(self, records: dict[TopicPartition, list[Any]]) -> None:
        refresh(self.c)
        items: list[tuple[str, Any]] = []
        for tp, batch in records.items():
            if not self.settings.order_by_marks:
                items += [(r.key.decode(), r.value) for r in batch if r.key != MARKS_KEY]
                continue
            order = self._order(tp.partition)
            for r in batch:
                if r.key == MARKS_KEY:
                    released = order.mark(decode_marks(r.value))
                    self._marks_dirty.add(tp.partition)
                else:
                    item = decode_located(r.value)
                    released = order.add(Held(located_time(item), r.value, r.key.decode(), item, r.offset))
                items += [(h.key, h.item) for h in released]
        if not items:
            return
        books: dict[str, CaseBook] = {}
        for key in {key for key, _ in items}:
            if key not in self.books.books:
                # A book not in memory yet is decoded from the table (after a start or a rebalance): a month of a
                # sub-district's cases takes seconds on a busy machine. The event loop runs between books, so the
                # group heartbeats of both stages go on (a 15 s first batch after a restart, all eight books of
                # the bench's month at once, cost the ingest stage its membership: issue #23). The changelog
                # bytes a book's decode dropped go back to the system before the next book's cases are made, or
                # the worker's peak holds a month of them beside a month of cases (pipeline.runtime.malloc).
                await asyncio.sleep(0)
                books.update(self.books.load([key]))
                if self.settings.malloc_trim_s > 0:
                    trim()
                continue
            books.update(self.books.load([key]))
        out = self.c.cases.apply(items, books)
        self.books.adopt(books)
        await self._emit(out)
        self.books.persist(books.values())

    async def _emit(self, out: Outcome) -> None:
        t = self.settings.topics
        for a in out.assignments:
            await self.send(t.assignments, orjson.dumps(a.to_json()), a.team.encode())
        for cid, state in out.states.items():
            await self.send(t.case_state, orjson.dumps(state), cid.encode())
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for r in out.refusals:
            await self.send(t.deadletter, refusal_json(t.case_updates, r, at), b"refused")
        rows = self.pending.rows
        rows.cases.extend(out.cases.values())
        rows.events.extend(out.events)
        rows.transitions.extend(out.transitions)
        rows.rounds.extend(out.rounds.values())
        rows.patrol_reports.extend(out.patrol_reports)
        counters = self.c.counters
        counters.assignments += len(out.assignments)
        counters.refusals += len(out.refusals)
        counters.duplicates += out.duplicates

    def partitions_lost(self, partitions: set[TopicPartition]) -> None:
        self.books.clear()
        for tp in partitions:
            self.orders.pop(tp.partition, None)
            self._held_stored.pop(tp.partition, None)
            self._marks_dirty.discard(tp.partition)

    def partitions_restored(self, partitions: set[TopicPartition]) -> None:
        """Hold again what the partitions' last owner held, with the marks it had seen."""
        for tp in partitions:
            live = self.cases_table.partition(tp.partition)
            order = self.orders[tp.partition] = Reorder(self.inputs)
            stored = self._held_stored[tp.partition] = set()
            for key, value in live.items():
                if key.startswith(HELD):
                    assert isinstance(value, bytes)
                    book, raw = value.split(b"\0", 1)
                    item = decode_located(raw)
                    offset = int(key[len(HELD):])
                    order.add(Held(located_time(item), raw, book.decode(), item, offset))
                    stored.add(offset)
                elif key == MARKS:
                    assert isinstance(value, bytes)
                    order.mark(decode_marks(value))

    def _store_order(self) -> None:
        """Into the table: the items held now that were not yet, away the ones released since, the new marks."""
        for partition, order in self.orders.items():
            stored = self._held_stored.setdefault(partition, set())
            now = {h.offset: h for h in order.held}
            for offset in now.keys() - stored:
                h = now[offset]
                self.cases_table.put(partition, f"{HELD}{offset}", h.key.encode() + b"\0" + h.raw)
            for offset in stored - now.keys():
                self.cases_table.delete(partition, f"{HELD}{offset}")
            self._held_stored[partition] = set(now)
            if partition in self._marks_dirty:
                marks = [(t, p, None if at == float("inf") else at) for (t, p), at in sorted(order.marks.items())]
                self.cases_table.put(partition, MARKS, encode_marks(marks))
        self._marks_dirty.clear()

    async def _checkpoint(self, wait: bool = True) -> None:
        late = sum(o.late for o in self.orders.values())
        if late:
            log.warning("%s: %d located items came behind the watermark of the ingest's marks (applied at once: "
                        "an ingest replay's repeats, or a partition's items out of time order)", self.group, late)
            for o in self.orders.values():
                o.late = 0
        self._store_order()
        await super()._checkpoint(wait)

    @Service.timer(1.0)
    async def _escalate_overdue(self) -> None:
        """With the wall clock (docs/cases.md §7.2), escalate overdue cases of quiet books too, every
        `sla_check_interval` seconds. With the stream clock each book's own input escalates its cases
        (CaseStage): a timer would escalate by the progress of other books, which a replay does not repeat."""
        if self.c.cases.clock not in ("wall", "live"):
            return
        now = time.monotonic()
        if now - self._last_sla_check < self.settings.sla_check_interval:
            return
        self._last_sla_check = now
        async with self.lock:
            if not self.owned:
                return
            refresh(self.c)
            loaded = self.books.load(self.books.all_keys())
            self.books.adopt(loaded)
            out = self.c.cases.escalate(loaded.values())
            if out.assignments:
                await self._emit(out)
                self.books.persist(loaded.values())
                if self.pending.since is None:
                    self.pending.since = time.monotonic()
            await self.tick()
