"""The worker's pure stages over a simulation, in process (no Kafka): the ingest stage and the case books, fed
the simulated messages as a worker sees them when nothing lags. Shared by tests/simulate/test_through_pipeline.py,
tests/analytics/simmonth.py and tests/bench/test_naive.py."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path

from pipeline.config import Topics
from pipeline.model.cases import CorrelationPolicy
from pipeline.simulate import SimMessage
from pipeline.simulate.world import World
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import default_decoder
from pipeline.stages.ingest import Ingest, IngestResult
from pipeline.stages.lifecycle import Outcome, Router
from pipeline.stages.registry import load_registry, load_types
from pipeline.stages.sensors import SensorState
from pipeline.wire import Message

SOURCE = {"raw_hotline": "hotline", "raw_patrol": "patrol"}


def worker_ingest(world: World, registry: Path) -> Ingest:
    """The worker's ingest stage: its decoder, the world's grid and gazetteer, the sensor registry file."""
    return Ingest(decoder=default_decoder(), grid=world.index, gazetteer=world.gazetteer,
                  sensors=load_registry(registry, load_types()))


def through_the_chain(ingest: Ingest, rules: Router, messages: Iterable[SimMessage],
                      topics: Topics | None = None) -> Iterator[tuple[str, IngestResult, Outcome]]:
    """The messages in runs of one topic at a time, in time order, through `ingest` and the case books routed by
    `rules`: per run, its topic (the simulator's name), what ingest made of it and what the case stage did.
    With `topics`, the messages carry the full topic names (else the simulator's)."""
    stage = CaseStage(rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, SensorState] = {}
    offset = 0
    for topic, run in groupby(messages, key=lambda m: m.topic):
        name = topic if topics is None else getattr(topics, topic)
        batch = []
        for m in run:
            batch.append(Message(name, 0, offset, m.value, m.key))
            offset += 1
        if topic in SOURCE:
            res = ingest.reports(SOURCE[topic], batch)  # type: ignore[arg-type]
        elif topic == "raw_iot":
            res = ingest.readings(batch, states)
        else:
            res = ingest.updates(batch)
        yield topic, res, stage.apply(res.located, books)
