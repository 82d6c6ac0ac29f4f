"""A simulated month through the worker's own processing chain (in process, no Kafka), into a SinkBatch.

`month_rows(...)` simulates one Asia/Shanghai calendar month of Hongkou, runs every message through the same
decoder, grid, sensor registry, case books and rules the worker uses (in time order, per topic run:
tests/simulate/chain.py, as tests/simulate/test_through_pipeline.py does), and returns the latest rows (cases,
rounds, events) and the simulation (its truth is the oracle's input). `python -m tests.analytics.simmonth 2024-05`
loads such a month into the ClickHouse server of the environment (CITYOPS_CLICKHOUSE_*), for `cityops report
bulletin`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.model.records import SinkBatch
from pipeline.simulate import SimConfig, Simulation, simulate
from pipeline.simulate.world import World
from tests.simulate.chain import through_the_chain, worker_ingest


def month_config(year: int, month: int, seed: int = 20, scale: float = 0.1, **changes: object) -> SimConfig:
    """The calendar month (Shanghai) at `scale` of the demo volume."""
    start = datetime(year, month, 1, tzinfo=UTC) - timedelta(hours=8)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC) - timedelta(hours=8)
    base: dict[str, object] = dict(
        days=(end - start).total_seconds() / 86400, start=start, sensors=max(100, int(3000 * scale)),
        hotline_per_day={"310109": max(20, int(5000 * scale))}, multi_source_per_day=max(1, int(12 * scale)),
        patrol_reports_per_shift=max(2, int(14 * scale)), seed=seed, malformed_share=0.0,
        sensor_incidents_per_1000=15.0, reading_interval_min=60.0)
    base.update(changes)
    return SimConfig(**base)  # type: ignore[arg-type]


def run_month(sim: Simulation, world: World, strict: bool = True) -> tuple[SinkBatch, set[str]]:
    """Every message of the simulation through the worker's chain; the latest row of each case and round, and
    the cases named by refused updates (`strict`: none may be refused)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sensors.csv"
        sim.write_registry(path)
        ingest = worker_ingest(world, path)
    cases, rounds, events = {}, {}, {}
    refusals: list[str] = []
    for _, _, out in through_the_chain(ingest, world.rules, sim.messages()):
        refusals += out.refusals
        cases.update(out.cases)
        rounds.update(out.rounds)
        events.update({e.event_id: e for e in out.events})
    assert not strict or not refusals, (len(refusals), refusals[:3])
    refused = {r.split()[1].rstrip(":") for r in refusals if len(r.split()) > 1}
    return SinkBatch(cases=list(cases.values()), rounds=list(rounds.values()),
                     events=list(events.values())), refused


def main(argv: list[str]) -> int:
    from pipeline.config import Settings
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink

    year, month = (int(x) for x in argv[0].split("-"))
    scale = float(argv[1]) if len(argv) > 1 else 0.1
    t = time.perf_counter()
    world = World()
    sim = simulate(month_config(year, month, scale=scale), world)
    batch, refused = run_month(sim, world, strict=False)
    print(f"simulated and processed {len(batch.cases)} cases in {time.perf_counter() - t:.0f} s "
          f"({len(refused)} cases with refused updates)")
    settings = Settings.from_env()
    migrate(settings)
    sink = ClickHouseSink(settings)
    try:
        for i in range(0, len(batch.events), 20000):
            sink.write(SinkBatch(events=batch.events[i:i + 20000]))
        sink.write(SinkBatch(cases=batch.cases, rounds=batch.rounds))
    finally:
        sink.close()
    print(f"stored into {settings.clickhouse_database}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
