"""The one wiring function: what a worker process runs on (settings, the two stages, the sink, the watched
rules, grid and sensor registry files), and how a changed file is picked up between batches.

The runtime services take a `Components`; only this module names the concrete sink (pipeline.sink), the rest of
the runtime sees the `Sink` protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from grid.gazetteer import Gazetteer
from grid.index import GridHolder
from pipeline.config import Settings
from pipeline.model.cases import CorrelationPolicy
from pipeline.model.privacy import pii_key
from pipeline.model.records import SinkBatch
from pipeline.sink.sink import ClickHouseSink
from pipeline.stages.casestage import CaseStage
from pipeline.stages.deadletters import DeadLetterLimit
from pipeline.stages.decode import default_decoder
from pipeline.stages.ingest import Ingest
from pipeline.stages.registry import RegistryHolder
from rules.engine import RulesHolder


class Sink(Protocol):
    """Where a checkpoint stores a batch's rows (pipeline.sink.sink.ClickHouseSink): `write` returns once every
    row is stored, retrying while the server is away, and raises when they cannot be (the batch replays)."""

    def write(self, batch: SinkBatch) -> None: ...


@dataclass
class Counters:
    """Running totals (exposed to the health endpoint and logs)."""

    consumed: dict[str, int] = field(default_factory=dict)
    deadletters: int = 0
    unlocated: int = 0
    assignments: int = 0
    refusals: int = 0
    duplicates: int = 0
    unknown_sensors: set[str] = field(default_factory=set)
    last_batch_at: float = 0.0

    def add(self, topic: str, n: int) -> None:
        self.consumed[topic] = self.consumed.get(topic, 0) + n
        self.last_batch_at = time.time()


@dataclass
class Components:
    settings: Settings
    ingest: Ingest
    cases: CaseStage
    sink: Sink
    grid_holder: GridHolder
    rules_holder: RulesHolder
    registry_holder: RegistryHolder
    dlq_limit: DeadLetterLimit
    counters: Counters = field(default_factory=Counters)
    last_refresh: float = 0.0         # monotonic time of the last look at the watched files


def load_components(settings: Settings, sink: Sink | None = None) -> Components:
    """Load grid, gazetteer, rules, sensor registry and the sink; fail loudly when any is invalid."""
    # a missing or weak key in production stops the worker before it reads a single ticket
    key = pii_key(settings.pii_key, settings.production)
    grid_holder = GridHolder(settings.grid_path or None, cache_dir=settings.var_dir / "cache" / "grid")
    rules_holder = RulesHolder(settings.rules_path)
    registry = RegistryHolder(settings.sensors_path)
    decoder = default_decoder(timedelta(seconds=settings.max_ahead_s), pii_key=key)
    ingest = Ingest(decoder=decoder, grid=grid_holder.current, gazetteer=Gazetteer.load(), sensors=registry.current,
                    silent_clock="wall" if settings.sla_clock in ("wall", "live") else "stream")
    cases = CaseStage(rules_holder, CorrelationPolicy(), clock=settings.sla_clock)  # type: ignore[arg-type]
    return Components(settings=settings, ingest=ingest, cases=cases,
                      sink=ClickHouseSink(settings) if sink is None else sink, grid_holder=grid_holder,
                      rules_holder=rules_holder, registry_holder=registry,
                      dlq_limit=DeadLetterLimit(max_ratio=settings.dlq_max_ratio))


def refresh(c: Components) -> None:
    """Pick up a changed grid or ruleset (validated; a bad file is refused and the old one stays)."""
    now = time.monotonic()
    if now - c.last_refresh < 2.0:
        return
    c.last_refresh = now
    c.rules_holder.maybe_reload()
    if c.grid_holder.maybe_reload():
        c.ingest.grid = c.grid_holder.current
    if c.registry_holder.maybe_reload():
        c.ingest.sensors = c.registry_holder.current

