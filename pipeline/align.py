"""Event-time alignment of a stage's input partitions while it catches up on a backlog.

Live, every input partition is read as it arrives and the stage sees reports roughly in the order they
happened. After downtime (or with a replayed input) the partitions are far behind, and Kafka hands out about as
many records of each partition per fetch. The few patrol reports and case updates of the last hours are then
read long before the millions of sensor readings of the same hours: a patrol report opens the case an alarm
would have opened (the discovery source is wrong), and updates for cases that alarms will open are parked and
expire by the grids' clocks, which the other sources have pushed ahead.

`Aligner` keeps the partitions level: it holds fetched records whose event time is more than `skew` seconds
ahead of the slowest partition of another topic that still has a backlog, and releases them as that partition
catches up (as Kafka Streams picks the record with the lowest timestamp across a task's partitions, here per
source). The event time is the
one the stages use: read from the message itself (`TIME_FIELDS`), on a few records per batch only (a binary
search; the input of a partition is in time order, nearly). A partition that is caught up, or has delivered
nothing for `idle` seconds, holds nobody back: live, the aligner only ever looks at the last record of a batch.

Held records are not processed, so their offsets are not committed: a crash or a rebalance re-reads them.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiokafka import TopicPartition

TIME_FIELDS = {            # logical topic -> the field with the event's time (CONTRACTS.md)
    "raw_hotline": "requested_datetime",
    "raw_patrol": "observed_at",
    "raw_iot": "measured_at",
    "case_updates": "at",
}


def time_reader(field: str) -> Callable[[bytes], float | None]:
    """`value -> event time (POSIX seconds)`, None for a message without a readable one (it will be a dead
    letter; it is released at once and holds nobody back)."""
    def read(value: bytes) -> float | None:
        try:
            text = orjson.loads(value)[field]
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except Exception:
            return None
    return read


class Aligner:
    def __init__(self, time_of: Mapping[str, Callable[[bytes], float | None]], skew_s: float = 60.0,
                 idle_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.time_of = time_of        # topic -> reader; partitions of other topics are released as they come
        self.skew = skew_s
        self.idle = idle_s
        self.clock = clock
        self.held: dict[TopicPartition, list[Any]] = {}
        self.last: dict[TopicPartition, float] = {}     # event time of the last record released
        self.fed: dict[TopicPartition, float] = {}       # wall time (clock) it last delivered records
        self.next_offset: dict[TopicPartition, int] = {}

    def fetchable(self, owned: Iterable[TopicPartition]) -> list[TopicPartition]:
        """The owned partitions to fetch from: those with nothing held."""
        return [tp for tp in owned if tp not in self.held]

    def add(self, fetched: Mapping[TopicPartition, list[Any]]) -> None:
        now = self.clock()
        for tp, records in fetched.items():
            if records:
                self.held.setdefault(tp, []).extend(records)
                self.fed[tp] = now
                self.next_offset[tp] = records[-1].offset + 1

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget partitions that were revoked or lost: their new owner reads the held records again."""
        for tp in partitions:
            for d in (self.held, self.last, self.fed, self.next_offset):
                d.pop(tp, None)

    def release(self, caught_up: Callable[[TopicPartition, int], bool]) -> dict[TopicPartition, list[Any]]:
        """Take the held records that are not ahead of the others: per partition a prefix, in its order.
        `caught_up(tp, next_offset)`: true when the partition has nothing more at the broker."""
        if not self.held:
            return {}
        heads: dict[TopicPartition, float | None] = {}
        for tp, records in self.held.items():
            read = self.time_of.get(tp.topic)
            heads[tp] = read(records[0].value) if read is not None and records[0].value is not None else None
        # where each topic's backlog is: the earliest of its partitions' first held records and (for those with
        # nothing held but more at the broker, delivered lately) last records released. Partitions of one topic
        # do not wait for each other: a topic's order across partitions does not matter (readings of different
        # sensors; reports of one batch are sorted by time downstream), its order against the other sources does.
        fronts: dict[str, float] = {}
        for tp, t in heads.items():
            if t is not None and t < fronts.get(tp.topic, float("inf")):
                fronts[tp.topic] = t
        now = self.clock()
        for tp, t in self.last.items():
            if (tp not in self.held and t < fronts.get(tp.topic, float("inf"))
                    and now - self.fed.get(tp, now) < self.idle and not caught_up(tp, self.next_offset.get(tp, 0))):
                fronts[tp.topic] = t
        slowest = sorted(fronts.items(), key=lambda f: f[1])[:2]
        out: dict[TopicPartition, list[Any]] = {}
        for tp, records in list(self.held.items()):
            read = self.time_of.get(tp.topic)
            if read is None or heads[tp] is None:
                k, released = (len(records), None) if read is None else (1, None)
            else:
                others = [t for topic, t in slowest if topic != tp.topic]
                k, released = _prefix(records, read, others[0] + self.skew if others else float("inf"))
            if k == 0:
                continue
            out[tp] = records[:k] if k < len(records) else records
            if released is not None:
                self.last[tp] = released
            if k < len(records):
                self.held[tp] = records[k:]
            else:
                del self.held[tp]
        return out


def _time(records: list[Any], i: int, read: Callable[[bytes], float | None]) -> float | None:
    v = records[i].value
    return read(v) if v is not None else None


def _prefix(records: list[Any], read: Callable[[bytes], float | None],
            limit: float) -> tuple[int, float | None]:
    """How many leading records are at or before `limit`, by a binary search on the event times (a record
    without one counts as on time), and the time of the last of them when known. Exact for records in time
    order; in a partition slightly out of order a record may be released a little early or late, never lost or
    reordered."""
    last = _time(records, len(records) - 1, read)
    if last is None or last <= limit:
        return len(records), last

    class _Times:
        def __getitem__(self, i: int) -> float:
            t = _time(records, i, read)
            return float("-inf") if t is None else t

        def __len__(self) -> int:
            return len(records)

    k = bisect_right(_Times(), limit)
    return k, (_time(records, k - 1, read) if k else None)
