"""The worker: the ingest stage (pipeline.runtime.ingest) and the cases stage (pipeline.runtime.cases), each a
batch consumer (pipeline.runtime.consumer) that feeds batches through pipeline.stages.ingest and sends or stores
the results.

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
commit; stable ids make the replay change nothing (see pipeline.stages.cases and pipeline.runtime.ingest).
"""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

from pipeline.config import Settings
from pipeline.runtime.cases import CasesService
from pipeline.runtime.components import Components, load_components
from pipeline.runtime.ingest import IngestService

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


STAGES = ("ingest", "cases")


def stage_services(c: Components, stage: str = "all") -> list[Any]:
    """The services of `stage` ("all", "ingest" or "cases"), each with its own consumer group."""
    out: list[Any] = []
    if stage in ("all", "ingest"):
        out.append(IngestService(c))
    if stage in ("all", "cases"):
        out.append(CasesService(c))
    return out


def run_worker(settings: Settings, loglevel: str = "warn", stage: str = "all") -> None:
    """Run the ingest stage, the cases stage, or both in one process (`stage` "all") until SIGTERM/SIGINT,
    which checkpoints and leaves the groups cleanly."""
    from mode import Worker

    if settings.heap_report is not None:
        from pipeline.runtime.heap import start_tracing
        start_tracing(settings.heap_trace)
    components = load_components(settings)
    tune_gc()
    services = stage_services(components, stage)
    if settings.malloc_trim_s > 0:
        from pipeline.runtime.malloc import Trimmer
        services.append(Trimmer(settings.malloc_trim_s))
    if settings.heap_report is not None:
        from pipeline.runtime.heap import HeapReporter
        services.append(HeapReporter(settings.heap_report))
    Worker(*services, loglevel=loglevel).execute_from_commandline()


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
