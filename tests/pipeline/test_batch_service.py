"""The stages' shared parts that need no broker: the changelog-backed table and the per-host instance slot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.runtime.changelog import ChangelogTable
from pipeline.runtime.instance import InstanceSlot


def table() -> ChangelogTable[dict[str, int]]:
    import orjson
    return ChangelogTable("t-changelog", orjson.dumps, orjson.loads)


def test_changes_are_taken_once_encoded_as_they_are_when_taken() -> None:
    t = table()
    t.put(0, "a", {"n": 1})
    t.put(1, "b", {"n": 2})
    t.partition(0)["a"]["n"] = 5            # changed in place, then declared
    t.changed(0, {"a"})
    assert sorted(t.take_changes()) == [(0, b"a", b'{"n":5}'), (1, b"b", b'{"n":2}')]
    assert t.take_changes() == []            # taken: nothing left
    t.delete(1, "b")
    t.delete(1, "never-there")               # deleting what is absent writes nothing
    assert t.take_changes() == [(1, b"b", None)]   # a tombstone
    assert sorted(t.all_keys()) == [(0, "a")] and len(t) == 1


def test_loading_a_changelog_replays_puts_and_tombstones_in_order() -> None:
    t = table()
    t.load(2, [(b"x", b'{"n":1}'), (b"y", b'{"n":2}'), (b"x", b'{"n":3}'), (b"y", None)])
    assert t.partition(2) == {"x": {"n": 3}}
    assert t.take_changes() == []            # what was loaded is not a change to write back
    t.drop({2})
    assert t.get(2, "x") is None and len(t) == 0


def test_slots_are_the_lowest_free_and_freed_by_release(tmp_path: Path) -> None:
    a = InstanceSlot.take(tmp_path, "g-ingest")
    b = InstanceSlot.take(tmp_path, "g-ingest")
    other = InstanceSlot.take(tmp_path, "g-cases")      # another group counts on its own
    assert (a.number, b.number, other.number) == (0, 1, 0)
    assert a.transactional_id != b.transactional_id and a.transactional_id.startswith("g-ingest-")
    a.release()
    c = InstanceSlot.take(tmp_path, "g-ingest")
    assert c.number == 0 and c.transactional_id == a.transactional_id   # a restart takes over the id
    for s in (b, c, other):
        s.release()


def test_a_dead_process_frees_its_slot(tmp_path: Path) -> None:
    """The kernel releases a killed process's lock: the worker started after a crash gets the same id."""
    code = ("import time; from pathlib import Path; from pipeline.runtime.instance import InstanceSlot; "
            f"s = InstanceSlot.take(Path({str(tmp_path)!r}), 'g'); print(s.number, flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        while_alive = InstanceSlot.take(tmp_path, "g")
        assert while_alive.number == 1
        while_alive.release()
    finally:
        holder.kill()                # like kill -9: no clean-up in the process
        holder.wait(timeout=30)
    assert InstanceSlot.take(tmp_path, "g").number == 0


def test_values_kept_in_a_table_take_their_own_size() -> None:
    """A case's JSON kept for the case's life (`json_bytes`) costs about its length in memory, not the encoder's
    whole buffer, and is the same JSON."""
    import tracemalloc

    import orjson

    from pipeline.runtime.changelog import json_bytes

    case = {f"field{i}": "x" * 12 for i in range(60)}
    tracemalloc.start()
    try:
        kept = [json_bytes(case) for _ in range(500)]
        per_value = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename")) / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(case)
    assert per_value < 2 * len(kept[0]), (per_value, len(kept[0]))


def test_a_checkpoint_is_due_at_once_when_the_input_is_drained() -> None:
    import time
    from types import SimpleNamespace

    from pipeline.config import Settings
    from pipeline.runtime.consumer import BatchService

    svc = BatchService(SimpleNamespace(settings=Settings.from_env()), commit_interval_s=60.0, max_rows=10)
    assert not svc._due() and not svc._due(drained=True)          # nothing pending: never
    svc.pending.since = time.monotonic()
    assert not svc._due()                                          # busy input: wait for the interval...
    assert svc._due(drained=True)                                  # ...caught up: store it now
    svc.pending.since = time.monotonic() - 61.0
    assert svc._due()
    svc.pending = type(svc.pending)()
    svc.pending.sends.extend([None] * 10)                          # backpressure, even with no time passed
    assert svc._due()


def test_the_key_partitioner_agrees_with_the_default_and_the_java_client() -> None:
    import random

    from aiokafka.partitioner import DefaultPartitioner

    from pipeline.runtime.fastclient import KeyPartitioner

    kp, default = KeyPartitioner(limit=50), DefaultPartitioner()
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(300)]
    for n in (1, 2, 3, 12, 48):
        parts = list(range(n))
        for key in keys + keys[:20]:                 # repeated keys come from the cache (which also overflows)
            assert kp(key, parts, parts) == default(key, parts, parts), (key, n)
    # murmur2 values from the Java client's tests (Utils.murmur2): a Java producer and this one put a key on the
    # same partition (the positive hash modulo the partition count)
    for key, java_hash in ((b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107),
                           (b"a-little-bit-long-string", -985981536)):
        for n in (7, 12):
            assert kp(key, list(range(n)), []) == (java_hash & 0x7FFFFFFF) % n
    assert kp(None, [0, 1, 2], [2]) == 2                 # keyless: a random available partition, as the default


def _partition_records(key_deserializer: object) -> list[object]:
    from aiokafka import TopicPartition
    from aiokafka.consumer.fetcher import PartitionRecords
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords

    data = bytearray()
    for first in (0, 3):          # two record batches, offsets 10-15
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                      producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
        for k in range(3):
            n = first + k
            b.append(k, timestamp=1_700_000_000_000 + n, key=None if n == 4 else f"k{n}".encode(),
                     value=None if n == 5 else f'{{"n":{n}}}'.encode(), headers=[])
        built = bytearray(b.build())
        built[0:8] = (10 + first).to_bytes(8, "big")            # the batch's base offset
        data += built
    tp = TopicPartition("cityops.raw.iot", 7)
    return list(PartitionRecords(tp, MemoryRecords(bytes(data)), [], 10, key_deserializer, None, False, 0))


def test_marked_consumers_get_lean_records_with_the_same_fields() -> None:
    from aiokafka.structs import ConsumerRecord

    from pipeline.runtime.fastclient import LEAN, install_lean_records
    from pipeline.wire import Message

    assert install_lean_records(), "aiokafka's PartitionRecords._consumer_record is gone: see LeanRecords"
    assert install_lean_records()                                  # idempotent
    lean, plain = _partition_records(LEAN), _partition_records(None)
    assert [type(r) for r in lean] == [Message] * 6
    assert [type(r) for r in plain] == [ConsumerRecord] * 6       # unmarked consumers are untouched
    fields = ("topic", "partition", "offset", "key", "value")
    assert [tuple(getattr(r, f) for f in fields) for r in lean] == \
        [tuple(getattr(r, f) for f in fields) for r in plain]
    assert [(r.offset, r.key, r.value) for r in lean] == [
        (10, b"k0", b'{"n":0}'), (11, b"k1", b'{"n":1}'), (12, b"k2", b'{"n":2}'),
        (13, b"k3", b'{"n":3}'), (14, None, b'{"n":4}'), (15, b"k5", None)]


def test_end_offsets_not_known_at_assignment_are_asked_again() -> None:
    """The aligner waits for a partition with a known backlog however slow its fetches are, but only its idle
    time for one whose backlog is unknown: a failed end-offset request is retried, not taken as the answer."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from pipeline.config import Settings
    from pipeline.runtime.align import Aligner, time_reader
    from pipeline.runtime.consumer import BatchService

    iot = TopicPartition("iot", 0)

    class Consumer:
        asked = 0

        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            self.asked += 1
            if self.asked == 1:
                raise TimeoutError("the broker is slow")
            return dict.fromkeys(tps, 500)

        async def position(self, tp: TopicPartition) -> int:
            return 0

        def highwater(self, tp: TopicPartition) -> int | None:
            return None

        async def getmany(self, *parts: TopicPartition, timeout_ms: int, max_records: int) -> dict[str, list[str]]:
            return {}

    svc = BatchService(SimpleNamespace(settings=Settings.from_env()))
    svc.group = "cityops-test-ingest"
    consumer = Consumer()
    svc._consumer = consumer  # type: ignore[assignment]
    svc.aligner = Aligner({"iot": time_reader("at")})
    svc.owned = {iot}
    asyncio.run(svc._next_records())
    assert consumer.asked == 1 and svc.aligner.lag(iot, consumer.highwater) is None    # unknown for now
    asyncio.run(svc._next_records())
    assert consumer.asked == 1                      # not asked again within the second
    svc._ends_retry_at = 0.0                        # a second later
    asyncio.run(svc._next_records())
    assert consumer.asked == 2 and svc.aligner.lag(iot, consumer.highwater) == 500
    asyncio.run(svc._next_records())
    assert consumer.asked == 2                      # known: never asked again


def test_nothing_is_fetched_before_the_assignment_is_owned() -> None:
    """What CI met: the assignment's callback (restoring the tables) was slow, a fetch meanwhile took the
    records of every partition the consumer had been given, and the patrol report went to the stage before the
    aligner knew the readings' partition had a backlog. Until the stage owns its partitions nothing is fetched;
    then the readings' backlog holds the patrol report back."""
    import asyncio
    from types import SimpleNamespace

    import orjson
    from aiokafka import TopicPartition

    from pipeline.config import Settings
    from pipeline.runtime.align import Aligner, time_reader
    from pipeline.runtime.consumer import BatchService
    from pipeline.wire import Message

    iot, patrol = TopicPartition("iot", 0), TopicPartition("patrol", 0)
    report = Message("patrol", 0, 0, orjson.dumps({"at": "2026-11-01T02:10:00Z"}))

    class Consumer:
        fetches: list[tuple[TopicPartition, ...]] = []

        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return {tp: 500 if tp == iot else 1 for tp in tps}

        async def position(self, tp: TopicPartition) -> int:
            return 0

        def highwater(self, tp: TopicPartition) -> int | None:
            return None

        async def getmany(self, *parts: TopicPartition, timeout_ms: int,
                          max_records: int) -> dict[TopicPartition, list[Message]]:
            self.fetches.append(parts)
            # the consumer was given both partitions; the patrol report is what the broker sends first
            return {patrol: [report]} if not parts or patrol in parts else {}

    svc = BatchService(SimpleNamespace(settings=Settings.from_env()))
    svc.group = "cityops-test-ingest"
    consumer = Consumer()
    svc._consumer = consumer  # type: ignore[assignment]
    svc.aligner = Aligner({"iot": time_reader("at"), "patrol": time_reader("at")})
    assert asyncio.run(svc._next_records()) == ({}, False)
    assert consumer.fetches == [], "fetched before the stage owned a partition"
    svc.owned = {iot, patrol}                       # the assignment's callback is done
    out, fetched = asyncio.run(svc._next_records())
    assert fetched and out == {}, "the readings' backlog of 500 must hold the patrol report back"
    assert svc.aligner.lag(iot, consumer.highwater) == 500


def test_a_slot_hands_its_member_id_to_the_process_that_takes_it_over(tmp_path: Path) -> None:
    """The lock file keeps the group member id of its holder: a process killed without leaving the group leaves
    it to its successor in the slot (which removes it from the group at once); a clean leave clears it."""
    code = ("import time; from pathlib import Path; from pipeline.runtime.instance import InstanceSlot; "
            f"s = InstanceSlot.take(Path({str(tmp_path)!r}), 'g'); s.remember_member('m-1'); "
            "s.remember_member('m-2'); print(s.predecessor or '-', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "-"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    after = InstanceSlot.take(tmp_path, "g")
    assert after.number == 0 and after.predecessor == "m-2"
    after.remember_member("m-3")
    after.forget_member()
    after.release()
    assert InstanceSlot.take(tmp_path, "g").predecessor == ""
