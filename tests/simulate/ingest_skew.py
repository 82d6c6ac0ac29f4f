"""How much case merging depends on two ingest processes being level in event time (README "Running a city: the
cluster", "Two ingest processes are not level in event time"):

    python -m tests.simulate.ingest_skew [SEED]

A small simulated day (tests/chaos/harness.stream_config(120, 300, SEED)) through the worker's own ingest stage
twice, as two processes would take it: one with the even partitions of every raw topic (4 partitions, Kafka's key
partitioner), one with the odd ones, each emitting its located items in event-time order; the two streams are then
interleaved as they reach a located partition with the second process `lag` minutes of event time behind, and go
through the case books. Prints, per lag, how many cases (as sets of reports, with their status) differ from one
process taking everything: as the items come, and through the cases stage's order by the ingest group's progress
marks (pipeline.stages.order: each process marks, after each batch of its items, the time of its last one; one
process taking everything goes through the same order)."""

from __future__ import annotations

import heapq
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline.model.cases import CorrelationPolicy
from pipeline.simulate import SimMessage
from pipeline.simulate.generate import simulate
from pipeline.simulate.world import World
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.order import Held, Reorder
from pipeline.wire import Message, decode_located
from tests.chaos.harness import stream_config
from tests.simulate.chain import SOURCE, worker_ingest

PARTITIONS = 4


def partition(m: SimMessage) -> int:
    return int(murmur2(m.key) & 0x7FFFFFFF) % PARTITIONS if m.key else 0


def located(world: World, registry: Path, messages: list[SimMessage]) -> list[tuple[float, str, bytes]]:
    """(event time, book key, located item) of every message, as one ingest process emits them."""
    ingest = worker_ingest(world, registry)
    states: dict[str, Any] = {}
    out = []
    for i, m in enumerate(messages):
        batch = [Message(m.topic, 0, i, m.value, m.key)]
        if m.topic in SOURCE:
            res = ingest.reports(SOURCE[m.topic], batch)  # type: ignore[arg-type]
        elif m.topic == "raw_iot":
            res = ingest.readings(batch, states)
        else:
            res = ingest.updates(batch)
        out += [(at, key, value) for at, (key, value) in zip(res.located_at, res.located, strict=True)]
    return out


def cases(world: World, items: list[tuple[float, str, bytes]]) -> dict[frozenset[str], str]:
    """The cases the books make of `items` in this order: {its reports: its status}."""
    stage = CaseStage(world.rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, Any] = {}
    member: dict[str, str] = {}
    for _, key, value in items:
        out = stage.apply([(key, value)], books)
        states.update(out.states)
        member.update({e.event_id: e.case_id for e in out.events})
    groups: dict[str, set[str]] = {}
    for event, case in member.items():
        groups.setdefault(case, set()).add(event)
    return {frozenset(g): str(states[c]["status"]) for c, g in groups.items()}


Item = tuple[float, str, bytes]
MARK = b"~mark"


def marked(items: list[Item], process: str, batch: int = 50) -> list[Item]:
    """A process's items with its progress mark after each batch of `batch` (and "caught up" at the end)."""
    out: list[Item] = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        out += chunk
        out.append((chunk[-1][0], process, MARK))
    if items:
        out.append((items[-1][0], process, MARK + b"end"))
    return out


def ordered(stream: list[Item], processes: tuple[str, ...]) -> list[Item]:
    """`stream` (items and marks as they arrive) in the order the cases stage applies them."""
    order = Reorder(frozenset((p, 0) for p in processes))
    out: list[Item] = []
    for i, (t, key, value) in enumerate(stream):
        if value.startswith(MARK):
            released = order.mark([(key, 0, None if value.endswith(b"end") else t)])
        else:
            released = order.add(Held(t, value, key, decode_located(value), i))
        out += [(h.at, h.key, h.raw) for h in released]
    assert not order.held
    return out


def skewed(a: list[Item], b: list[Item], lag_min: float) -> list[Item]:
    """Two processes' outputs as they reach the located partition, the second `lag_min` minutes behind."""
    merged = heapq.merge([(t, 0, k, v) for t, k, v in a], [(t + lag_min * 60, 1, k, v) for t, k, v in b],
                         key=lambda x: (x[0], x[1]))
    return [(t - lag_min * 60 if who else t, k, v) for t, who, k, v in merged]


def differ(got: dict[frozenset[str], str], want: dict[frozenset[str], str]) -> int:
    return sum(1 for c in set(got) | set(want) if got.get(c) != want.get(c))


def replay(seed: int = 11, lags: tuple[float, ...] = (0, 1, 5, 15, 60, 240)) -> dict[float, tuple[int, int]]:
    """{lag in minutes: (cases differing from one process as the items come, and in the marks' order)}."""
    world = World()
    sim = simulate(stream_config(120, 300, seed))
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "sensors.csv"
        sim.write_registry(registry)
        messages = list(sim.messages())
        one = located(world, registry, messages)
        alone = cases(world, sorted(one, key=lambda x: x[0]))
        alone_ordered = cases(world, ordered(marked(sorted(one, key=lambda x: x[0]), "one"), ("one",)))
        a = located(world, registry, [m for m in messages if partition(m) % 2 == 0])
        b = located(world, registry, [m for m in messages if partition(m) % 2 == 1])
    print(f"{len(messages):,} messages; one ingest process: {len(alone)} cases ({len(alone_ordered)} in order)")
    out = {}
    for lag in lags:
        plain = [(t, k, v) for t, k, v in skewed(a, b, lag)]
        got = cases(world, plain)
        got_ordered = cases(world, ordered(skewed(marked(a, "a"), marked(b, "b"), lag), ("a", "b")))
        out[lag] = (differ(got, alone), differ(got_ordered, alone_ordered))
        print(f"second process {lag:>3} min behind: {len(got)} cases, {out[lag][0]} differ from one process; "
              f"in the marks' order {len(got_ordered)} cases, {out[lag][1]} differ")
    return out


def main(seed: int = 11) -> None:
    replay(seed)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
