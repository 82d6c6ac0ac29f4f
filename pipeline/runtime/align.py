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
search; the input of a partition is in time order, nearly).

Which partitions hold the others back, by what is known of their backlog at the broker (as Kafka Streams'
`max.task.idle.ms`):
- caught up (nothing more at the broker): nobody, so live the aligner only ever looks at the last record of a
  batch;
- a backlog of known size (the end offset asked for at assignment, or the high watermark of a fetch): the others
  wait for its records, which are on their way however slow the fetches are; only after `stall` seconds of
  fetching without one record of it do they stop waiting (a partition whose leader is gone must not stop the
  whole stage);
- unknown (nothing fetched yet, and the end offset could not be asked): the others wait `idle` seconds of
  fetching for it.

Held records are not processed, so their offsets are not committed: a crash or a rebalance re-reads them.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiokafka import TopicPartition

log = logging.getLogger("cityops.align")

TIME_FIELDS = {            # logical topic -> the field with the event's time (CONTRACTS.md)
    "raw_hotline": "requested_datetime",
    "raw_patrol": "observed_at",
    "raw_iot": "measured_at",
    "case_updates": "at",
}


def time_reader(field: str) -> Callable[[bytes], float | None]:
    """`value -> event time (POSIX seconds)`, None for a message without a readable one (it will be a dead
    letter, and goes with its neighbours)."""
    def read(value: bytes) -> float | None:
        try:
            text = orjson.loads(value)[field]
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except Exception:
            return None
    return read


class Aligner:
    def __init__(self, time_of: Mapping[str, Callable[[bytes], float | None]], skew_s: float = 60.0,
                 idle_s: float = 2.0, window: Callable[[], tuple[float, float]] | None = None,
                 stall_s: float = 30.0) -> None:
        # topic -> reader; partitions of other topics are released as they come. A time outside `window()`
        # (the times the stage accepts: others are dead letters) counts as unreadable: one bogus time must
        # not hold its partition back, or set where it stands.
        self.window = window
        self._lo, self._hi = float("-inf"), float("inf")
        self.time_of = {topic: self._within(read) for topic, read in time_of.items()}
        self.skew = skew_s
        self.idle = idle_s
        self.stall = max(stall_s, idle_s)
        self.held: dict[TopicPartition, list[Any]] = {}
        self.last: dict[TopicPartition, float] = {}     # event time of the last record released
        # seconds the stage waited in fetches that asked this partition for records and got none since it last
        # delivered (not wall time: a stage busy elsewhere, say storing a checkpoint, starves nobody)
        self.starved: dict[TopicPartition, float] = {}
        self.next_offset: dict[TopicPartition, int] = {}
        self.end: dict[TopicPartition, int] = {}        # end offsets known from before the first fetch
        self.waived: set[TopicPartition] = set()        # partitions the others stopped waiting for (logged once)
        self._heads: dict[TopicPartition, float | None] = {}   # event time of each held partition's first record

    def _within(self, read: Callable[[bytes], float | None]) -> Callable[[bytes], float | None]:
        def checked(value: bytes) -> float | None:
            t = read(value)
            return t if t is not None and self._lo <= t <= self._hi else None
        return checked

    def fetchable(self, owned: Iterable[TopicPartition]) -> list[TopicPartition]:
        """The owned partitions to fetch from: those with nothing held."""
        return [tp for tp in owned if tp not in self.held]

    def track(self, tp: TopicPartition, position: int, end: int | None = None) -> None:
        """A partition just assigned, at `position`, with `end` its end offset when known: until it delivers
        nothing is known of where its backlog starts in event time, so the other sources wait for it, unless it
        is caught up."""
        if tp not in self.next_offset:
            self.next_offset[tp] = position
            self.last[tp] = float("-inf")
            self.starved[tp] = 0.0
            if end is not None:
                self.end[tp] = end

    def lag(self, tp: TopicPartition, highwater: Callable[[TopicPartition], int | None]) -> int | None:
        """Records of `tp` at the broker not fetched yet (0: caught up), None when unknown."""
        high = highwater(tp)
        known = self.end.get(tp)
        if high is None or (known is not None and known > high):
            high = known
        return None if high is None else max(high - self.next_offset.get(tp, 0), 0)

    def _waits_for(self, tp: TopicPartition, lag: int | None) -> bool:
        """Whether the other sources wait for `tp`, which holds nothing now (see the module's text)."""
        if lag == 0:
            return False
        patience = self.idle if lag is None else self.stall
        if self.starved.get(tp, 0.0) < patience:
            return True
        if tp not in self.waived:
            self.waived.add(tp)
            log.warning("align: %s[%d] delivered nothing in %.1f s of fetching (%s); the other sources stop "
                        "waiting for it", tp.topic, tp.partition, self.starved.get(tp, 0.0),
                        "backlog unknown" if lag is None else f"{lag} records behind")
        return False

    def add(self, fetched: Mapping[TopicPartition, list[Any]], asked: Iterable[TopicPartition] = (),
            waited_s: float = 0.0) -> None:
        """Records a fetch returned; `asked`: the partitions it asked for, `waited_s`: how long it took."""
        for tp in asked:
            if not fetched.get(tp):
                self.starved[tp] = self.starved.get(tp, 0.0) + waited_s
        for tp, records in fetched.items():
            if records:
                self.held.setdefault(tp, []).extend(records)
                self.starved[tp] = 0.0
                self.waived.discard(tp)
                self.next_offset[tp] = records[-1].offset + 1

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget partitions that were revoked or lost: their new owner reads the held records again."""
        for tp in partitions:
            for d in (self.held, self.last, self.starved, self.next_offset, self.end, self._heads):
                d.pop(tp, None)
            self.waived.discard(tp)

    def release(self, highwater: Callable[[TopicPartition], int | None]) -> dict[TopicPartition, list[Any]]:
        """Take the held records that are not ahead of the others: per partition a prefix, in its order.
        `highwater(tp)`: the partition's end offset as the last fetch saw it, None before any.

        Partitions of one topic do not wait for each other: a topic's order across partitions does not matter
        (readings of different sensors; reports of one batch are sorted by time downstream), its order against
        the other sources does. Releasing one source lets the others go further, so each topic goes as far as
        the others can follow with what was fetched: a batch spans the fetched backlog, not one skew of it."""
        if not self.held:
            return {}
        if self.window is not None:
            self._lo, self._hi = self.window()
        inf = float("inf")
        front: dict[str, float] = {}   # each topic's earliest record not yet released
        end: dict[str, float] = {}     # how far each topic can get without another fetch
        for tp in self.held:
            head = self._head(tp)
            if head is None:
                continue                # nothing readable held: released as it is
            front[tp.topic] = min(front.get(tp.topic, inf), head)
            if self.lag(tp, highwater) != 0:
                tail = _last_time(self.held[tp], self.time_of[tp.topic])
                end[tp.topic] = min(end.get(tp.topic, inf), head if tail is None else max(head, tail))
        for tp, t in self.last.items():
            if tp not in self.held and self._waits_for(tp, self.lag(tp, highwater)):
                front[tp.topic] = min(front.get(tp.topic, inf), t)      # it delivers more soon, from about t
                end[tp.topic] = min(end.get(tp.topic, inf), t)
        # reach[x] = max(front[x], min(end[x], min over other topics y of reach[y] + skew)): the greatest
        # solution, by relaxation from the ends down (at most one round per topic, as for shortest paths)
        reach = {x: max(front[x], end.get(x, inf)) for x in front}
        for _ in range(len(reach) + 1):
            changed = False
            for x in reach:
                r = max(front[x], min(end.get(x, inf), _others(reach, x) + self.skew))
                if r < reach[x]:
                    reach[x], changed = r, True
            if not changed:
                break
        out: dict[TopicPartition, list[Any]] = {}
        for tp, records in list(self.held.items()):
            read = self.time_of.get(tp.topic)
            if read is None:
                k, released = len(records), None
            else:
                limit = _others(reach, tp.topic) + self.skew
                head = self._head(tp)
                if head is not None and head > limit:
                    continue
                k, released = _prefix(records, read, limit)
            if k == 0:
                continue
            out[tp] = records[:k] if k < len(records) else records
            if released is not None:
                self.last[tp] = released
            self._heads.pop(tp, None)
            if k < len(records):
                self.held[tp] = records[k:]
            else:
                del self.held[tp]
        return out

    def front(self, tp: TopicPartition, highwater: Callable[[TopicPartition], int | None]) -> float | None:
        """Where `tp` stands for the records still to come of it: they happened at or after the returned time
        (its first held record's, else its last released one's; -inf: nothing known yet), or None: it is caught
        up (nothing held, nothing more at the broker), it holds nobody back (the progress marks of
        pipeline.wire.encode_marks)."""
        if tp in self.held:
            head = self._head(tp)
            return head if head is not None else self.last.get(tp, float("-inf"))
        if self.lag(tp, highwater) == 0:
            return None
        return self.last.get(tp, float("-inf"))

    def _head(self, tp: TopicPartition) -> float | None:
        """Event time of the first readable held record of `tp` (None: none readable, or an unknown topic)."""
        if tp not in self._heads:
            read = self.time_of.get(tp.topic)
            t = None
            if read is not None:
                records = self.held[tp]
                for i in range(min(len(records), 100)):
                    t = _time(records, i, read)
                    if t is not None:
                        break
            self._heads[tp] = t
        return self._heads[tp]


def _others(reach: dict[str, float], topic: str) -> float:
    return min((r for x, r in reach.items() if x != topic), default=float("inf"))


def _time(records: list[Any], i: int, read: Callable[[bytes], float | None]) -> float | None:
    v = records[i].value
    return read(v) if v is not None else None


def _last_time(records: list[Any], read: Callable[[bytes], float | None]) -> float | None:
    """The time of the last readable record (of the last 100)."""
    for i in range(len(records) - 1, max(len(records) - 100, 0) - 1, -1):
        t = _time(records, i, read)
        if t is not None:
            return t
    return None


def _prefix(records: list[Any], read: Callable[[bytes], float | None],
            limit: float) -> tuple[int, float | None]:
    """How many leading records are at or before `limit`, by a binary search on the event times (a record
    without one goes with the one before it), and the time of the last of them when known. Exact for records in time
    order; in a partition slightly out of order a record may be released a little early or late, never lost or
    reordered."""
    last = _last_time(records, read)
    if last is None or last <= limit:
        return len(records), last

    class _Times:
        def __getitem__(self, i: int) -> float:
            while i >= 0:               # an unreadable record goes with the readable one before it
                t = _time(records, i, read)
                if t is not None:
                    return t
                i -= 1
            return float("-inf")

        def __len__(self) -> int:
            return len(records)

    k = bisect_right(_Times(), limit)
    return k, (_time(records, k - 1, read) if k else None)
