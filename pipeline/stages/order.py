"""The cases stage's input in event-time order, behind the ingest group's watermark (issue #18, README "Two ingest
processes are not level in event time").

Case merging depends on what a book has seen when a report arrives (docs/cases.md §2), so each book must take its
reports and updates in the order they happened. One ingest process keeps its input partitions level
(pipeline.runtime.align), but several processes of the stage are not level with each other: catching up a
backlog, one runs hours ahead. The located topic therefore carries, beside the items, each ingest process's
progress marks (`pipeline.wire.encode_marks`): for each input partition it owns, the event time below which it has
emitted everything of that partition, or "caught up".

`Reorder` is one located partition's buffer: items wait until the watermark, the least mark over every input
partition of the pipeline (a partition without a mark yet: nothing is known, everybody waits; caught up: it holds
nobody back, as the aligner treats an idle partition), has passed their time, and are then released in
(event time, item bytes) order: the same order whichever process emitted what when, so the books, their case
ids and the escalations their clocks fire come out the same. An item older than what was already released (a
late one: a caught-up partition's new record, or an ingest replay's repeat) is released at once. Releases happen
at a mark or a late item only, so the order is a function of the partition's messages, whatever the batches.

The held items and the marks are part of the stage's state (pipeline.runtime.cases stores them in its changelog
with the case books, so a restart holds exactly what the crashed process held). Pure: no Kafka.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

INF = float("inf")
Input = tuple[str, int]          # an input partition: (raw topic, partition)


@dataclass(order=True)
class Held:
    at: float                    # event time (POSIX seconds)
    raw: bytes                   # the located item as it came (its bytes break ties of time)
    key: str = field(compare=False)          # its book
    item: Any = field(compare=False)         # decoded (pipeline.wire.decode_located)
    offset: int = field(compare=False)       # its offset in the located partition: its key in the state


@dataclass
class Reorder:
    inputs: frozenset[Input]                  # every input partition of the ingest stage
    marks: dict[Input, float] = field(default_factory=dict)   # INF: caught up
    held: list[Held] = field(default_factory=list)            # a heap
    released_to: float = -INF                 # the watermark of the last release
    late: int = 0                             # items that came behind it (released at once)

    def mark(self, marks: Iterable[tuple[str, int, float | None]]) -> list[Held]:
        """Progress marks of one ingest process (`None`: caught up), and the items they release, in order. A mark
        replaces the partition's previous one: a partition that moved to another process is marked by its new
        owner after the old one stopped."""
        for topic, partition, at in marks:
            self.marks[(topic, partition)] = INF if at is None else at
        return self.release()

    def watermark(self) -> float:
        """Every item still to come of any input partition happened at or after this time (no inputs known: none
        is known, -inf)."""
        if not self.inputs:
            return -INF
        return min(self.marks.get(tp, -INF) for tp in self.inputs)

    def add(self, held: Held) -> list[Held]:
        """Hold an item; one behind the last release's watermark (late: an ingest replay's repeat, a new record of
        a partition that had caught up) is released at once."""
        if held.at < self.released_to:
            self.late += 1
            return [held]
        heapq.heappush(self.held, held)
        return []

    def release(self) -> list[Held]:
        """The held items before the watermark, in order. Items are released only here and by `add` (late ones),
        so the order depends on the order of the located partition's messages alone, not on how they were
        fetched."""
        w = self.watermark()
        out: list[Held] = []
        while self.held and self.held[0].at < w:
            out.append(heapq.heappop(self.held))
        if w > self.released_to:
            self.released_to = w
        return out
