"""The worker: the ingest stage (pipeline.ingest_service) and the cases stage (pipeline.cases_service), each a
batch consumer (pipeline.batch_service) that feeds batches through pipeline.flow and sends or stores the results.

Read top to bottom, this is the whole wiring:

    cityops.raw.hotline  -+
    cityops.raw.patrol   -+-> ingest (decode, sensor state, locate) -> cityops.located (keyed by grid)
    cityops.raw.iot      -+        |-> cityops.deadletter, cityops.unlocated, ClickHouse sensor_readings
    cityops.case-updates -+
    cityops.located -> cases (correlate, dispatch, lifecycle) -> cityops.assignments, ClickHouse cases/events/
                                                                 case_transitions, cityops.deadletter (refusals)

Consumer groups: `<app id>-ingest` and `<app id>-cases` (Settings.consumer_groups), in every process layout.

Delivery: a batch's outputs are stored in ClickHouse and acknowledged by the broker before the batch's state is
written (sensor-state changelog, cases table) and its offsets can be committed. A crash replays from the last
commit; stable ids make the replay change nothing (see pipeline.cases and pipeline.ingest_service).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.cases import CorrelationPolicy
from pipeline.config import Settings
from pipeline.decode import default_decoder
from pipeline.flow import CaseStage, DeadLetterLimit, Ingest
from pipeline.privacy import pii_key
from pipeline.sensors import RegistryHolder

log = logging.getLogger("cityops.worker")

# The cyclic garbage collector's thresholds in a worker: a young collection every 50,000 net allocations instead of
# 700 (a batch of 5,000 readings allocates several objects per reading); the older generations keep Python's
# ratios, so cycles that outlive a young collection are still freed within minutes. With Python's defaults a
# worker spent about 10 % of its CPU time in the collector, scanning the same long-lived sensor states and cases
# again and again (gc.callbacks over a `make bench` throughput run: 0.7-0.8 s of 7.4 CPU-s, 0.13 s with these).
# The month run peaks at the same memory with (50,000, 10, 10) as with (50,000, 20, 100).
GC_THRESHOLDS = (50_000, 10, 10)


def tune_gc() -> None:
    """Collect once, move everything loaded so far (grid, gazetteer, rules, registry, modules) to the permanent
    generation, which the collector never scans again, and collect the rest less often. Cycles are still
    collected: only the frequency changes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    sink: Any                         # pipeline.sink.ClickHouseSink
    grid_holder: Any                  # grid.index.GridHolder
    rules_holder: Any                 # rules.engine.RulesHolder
    registry_holder: RegistryHolder
    dlq_limit: DeadLetterLimit
    counters: Counters = field(default_factory=Counters)


def load_components(settings: Settings) -> Components:
    """Load grid, gazetteer, rules, sensor registry and the sink; fail loudly when any is invalid."""
    pii_key()   # a missing or weak key in production stops the worker before it reads a single ticket
    from grid.gazetteer import Gazetteer
    from grid.index import GridHolder
    from pipeline.sink import ClickHouseSink
    from rules.engine import DEFAULT_RULES, RulesHolder

    grid_holder = GridHolder(Path(os.environ["CITYOPS_GRID"])) if os.environ.get("CITYOPS_GRID") else GridHolder()
    rules_holder = RulesHolder(Path(os.environ.get("CITYOPS_RULES", str(DEFAULT_RULES))))
    registry = RegistryHolder(Path(os.environ["CITYOPS_SENSORS"]) if os.environ.get("CITYOPS_SENSORS") else None)
    max_ratio = float(os.environ.get("CITYOPS_DLQ_MAX_RATIO", "0.5"))
    ingest = Ingest(decoder=default_decoder(timedelta(seconds=settings.max_ahead_s)), grid=grid_holder.current,
                    gazetteer=Gazetteer.load(), sensors=registry.current)
    cases = CaseStage(rules_holder, CorrelationPolicy(), clock=settings.sla_clock)  # type: ignore[arg-type]
    return Components(settings=settings, ingest=ingest, cases=cases,
                      sink=ClickHouseSink(settings), grid_holder=grid_holder, rules_holder=rules_holder,
                      registry_holder=registry, dlq_limit=DeadLetterLimit(max_ratio=max_ratio))


STAGES = ("ingest", "cases")


def stage_services(c: Components, stage: str = "all") -> list[Any]:
    """The services of `stage` ("all", "ingest" or "cases"), each with its own consumer group."""
    from pipeline.cases_service import CasesService
    from pipeline.ingest_service import IngestService

    out: list[Any] = []
    if stage in ("all", "ingest"):
        out.append(IngestService(c))
    if stage in ("all", "cases"):
        out.append(CasesService(c))
    return out


def refresh(c: Components) -> None:
    """Pick up a changed grid or ruleset (validated; a bad file is refused and the old one stays)."""
    now = time.monotonic()
    if now - getattr(c, "_last_refresh", 0.0) < 2.0:
        return
    c._last_refresh = now  # type: ignore[attr-defined]
    c.rules_holder.maybe_reload()
    if c.grid_holder.maybe_reload():
        c.ingest.grid = c.grid_holder.current
    if c.registry_holder.maybe_reload():
        c.ingest.sensors = c.registry_holder.current


def run_worker(settings: Settings, loglevel: str = "warn", stage: str = "all") -> None:
    """Run the ingest stage, the cases stage, or both in one process (`stage` "all") until SIGTERM/SIGINT,
    which checkpoints and leaves the groups cleanly."""
    from mode import Worker

    components = load_components(settings)
    tune_gc()
    Worker(*stage_services(components, stage), loglevel=loglevel).execute_from_commandline()


def _cmd(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper() if args.loglevel != "warn" else "WARNING")
    run_worker(Settings.from_env(), args.loglevel, args.stage)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run a stream worker (joins the consumer group)")
    p.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    p.add_argument("--stage", default="all", choices=["all", *STAGES],
                   help="run both stages (default) or one: ingest (decode, sensors, locate) or cases "
                        "(correlate, dispatch, lifecycle); see README 'Running the workers'")
    p.set_defaults(func=_cmd)
