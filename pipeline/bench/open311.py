"""How fast the Open311 search answers on a month of a district: `python -m pipeline.bench.open311`.

1. The simulator makes `--days` (30) days of Hongkou: every 12345 ticket (about 1,800 a day), patrol report and
   team update, and one reading a day per sensor (readings are no requests).
2. The worker's chain (`pipeline.stages.ingest`: decoder, ingest with gazetteer and grid, case books, the shipped rules)
   processes them in process, in worker-sized batches, and the sink stores the rows in a scratch ClickHouse
   database of the local stack (`cityops_o311bench<stamp>`, dropped at the end unless `--keep`). The live view
   gets every case's final state, as the web's feed would have delivered it.
3. The web app (the real `build_app` over the real `CaseArchive`) answers searches over HTTP on the loopback,
   each kind `--repeat` times in shuffled order, one at a time: the default 90-day window (which holds the whole
   month) in JSON and XML, `status=open`, `status=closed`, three service codes, a deep page, `extensions=true`,
   and the default window again with the live-state overrides at their cap (2,000 cases changed in the last 15
   minutes, a far busier moment than the district's ~50).

It prints the data's size and p50 / p95 / p99 / max per kind and over every 90-day search, in milliseconds of
wall time (the client's view: request, SQL, rendering, response). The machine is shared: the load average is
printed next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from pipeline.config import Settings

KINDS: dict[str, str] = {
    "90 days, json": "requests.json",
    "90 days, xml": "requests.xml",
    "status=open": "requests.json?status=open",
    "status=closed": "requests.xml?status=closed",
    "3 service codes": "requests.json?service_code=E0501,E0505,P0101",
    "page 20 of 100": "requests.json?page=20&page_size=100",
    "extensions, 100": "requests.json?extensions=true&page_size=100",
    "2,000 live overrides": "requests.json?status=open",
}
OVERRIDES = "2,000 live overrides"


def build_month(days: float, sensors: int, seed: int, settings: Settings) -> tuple[dict[str, dict[str, Any]],
                                                                                   list[bytes], dict[str, int]]:
    """Simulate, process with the worker's chain, store; returns the final case states, the unlocated tickets and
    the counts stored."""
    import orjson

    from pipeline.model.cases import CorrelationPolicy
    from pipeline.model.records import SinkBatch
    from pipeline.simulate import SimConfig, simulate
    from pipeline.simulate.world import World
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.stages.cases import CaseBook
    from pipeline.stages.casestage import CaseStage
    from pipeline.stages.decode import default_decoder
    from pipeline.stages.ingest import Ingest
    from pipeline.stages.registry import load_registry, load_types
    from pipeline.stages.sensors import SensorState
    from pipeline.wire import Message

    world = World()
    sim = simulate(SimConfig(days=days, sensors=sensors, reading_interval_min=1440.0, seed=seed), world)
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "sensors.csv"
        sim.write_registry(registry)
        sensors_registry = load_registry(registry, load_types())
    ingest = Ingest(decoder=default_decoder(), grid=world.index, gazetteer=world.gazetteer, sensors=sensors_registry)
    stage = CaseStage(world.rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, SensorState] = {}
    case_states: dict[str, dict[str, Any]] = {}
    unlocated: list[bytes] = []
    sink = ClickHouseSink(settings)
    pending = SinkBatch()
    counts = {"tickets": 0, "events": 0, "cases": 0}
    offset = 0
    for topic, group in groupby(sim.messages(), key=lambda m: m.topic):
        msgs = []
        for m in group:
            msgs.append(Message(topic, 0, offset, m.value, m.key))
            offset += 1
        for i in range(0, len(msgs), 2000):
            batch = msgs[i:i + 2000]
            if topic in ("raw_hotline", "raw_patrol"):
                res = ingest.reports("hotline" if topic == "raw_hotline" else "patrol", batch)
            elif topic == "raw_iot":
                res = ingest.readings(batch, states)
            else:
                res = ingest.updates(batch)
            unlocated += res.unlocated
            out = stage.apply(res.located, books)
            case_states.update(out.states)
            counts["tickets"] += sum(1 for e in out.events if e.source == "hotline")
            counts["events"] += len(out.events)
            pending.cases += out.cases.values()
            pending.events += out.events
            pending.transitions += out.transitions
            if len(pending) > 50_000:
                sink.write(pending)
                pending = SinkBatch()
    sink.write(pending)
    sink.close()
    counts["cases"] = len(case_states)
    counts["unlocated"] = len({orjson.loads(u)["event_id"] for u in unlocated})
    return case_states, unlocated, counts


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def measure(settings: Settings, case_states: dict[str, dict[str, Any]], unlocated: list[bytes],
                  repeat: int, seed: int) -> dict[str, list[float]]:
    """Milliseconds per search kind, through the web app on the loopback."""
    import orjson
    from aiohttp.test_utils import TestClient, TestServer

    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.stages.decode import default_decoder
    from pipeline.web import auth
    from pipeline.web.app import build_app
    from pipeline.web.archive import open_archive
    from pipeline.web.centre import Centre
    from pipeline.web.live import LiveBoard
    from pipeline.web.outbox import MemoryOutbox
    from pipeline.web.ratelimit import RateLimiter
    from pipeline.web.users import Users, UsersHolder

    users = Path(tempfile.mkdtemp()) / "users.yaml"
    from pipeline.web.users import write_users

    write_users(users, Users({}, str(users)))
    centre = Centre(settings=settings, users=UsersHolder(users), signer=auth.Signer(b"bench"), board=LiveBoard(),
                    outbox=MemoryOutbox(), decoder=default_decoder(), taxonomy=default_taxonomy(),
                    map_json=b"{}", archive=open_archive(settings), limiter=RateLimiter(rate=1e9, burst=1e9))
    old = 0.0       # Kafka timestamps long past: the live view holds them, the search's overrides do not
    centre.apply_items([("case-state", s, old) for s in case_states.values()]
                       + [("unlocated", orjson.loads(u), old) for u in unlocated])
    busy = sorted(case_states.values(), key=lambda s: str(s.get("created_at")))[-2000:]
    plan = [kind for kind in KINDS if kind != OVERRIDES for _ in range(repeat)]
    random.Random(seed).shuffle(plan)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    async with TestClient(TestServer(build_app(centre, start_background=False))) as client:
        async def timed(kind: str) -> None:
            start = time.perf_counter()
            resp = await client.get(f"/open311/v2/{KINDS[kind]}")
            await resp.read()
            elapsed = (time.perf_counter() - start) * 1000.0
            if resp.status != 200:
                raise RuntimeError(f"{kind}: HTTP {resp.status}: {(await resp.text())[:300]}")
            times[kind].append(elapsed)

        for kind in ["90 days, json"] * 3 + plan:          # three warm-up searches are not counted
            await timed(kind)
        # then 2,000 cases "changed a moment ago", as the feed would deliver them: the overrides at their cap
        centre.apply_items([("case-state", s, time.time()) for s in busy])
        for _ in range(repeat):
            await timed(OVERRIDES)
    for kind in times:
        times[kind] = times[kind][-repeat:]
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.open311", description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--sensors", type=int, default=500)
    p.add_argument("--repeat", type=int, default=100, help="searches of each kind")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = p.parse_args(argv)
    from pipeline.sink.migrate import migrate
    from pipeline.sink.transport import ClickHouse

    stamp = datetime.now(UTC).strftime("%m%d%H%M%S")
    settings = replace(Settings.from_env(), clickhouse_database=f"cityops_o311bench{stamp}")
    migrate(settings)
    try:
        start = time.perf_counter()
        case_states, unlocated, counts = build_month(args.days, args.sensors, args.seed, settings)
        print(f"{args.days:g} days of Hongkou in {settings.clickhouse_database}: {counts['tickets']:,} tickets, "
              f"{counts['events']:,} events, {counts['cases']:,} cases, {counts['unlocated']:,} unlocated "
              f"({time.perf_counter() - start:.0f} s to build)")
        load = os.getloadavg()
        times = asyncio.run(measure(settings, case_states, unlocated, args.repeat, args.seed))
        print(f"{'search':<22} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  (ms)")
        every: list[float] = []
        for kind, samples in times.items():
            every += samples
            print(f"{kind:<22} {len(samples):>4} {statistics.median(samples):>7.1f} {percentile(samples, .95):>7.1f} "
                  f"{percentile(samples, .99):>7.1f} {max(samples):>7.1f}")
        print(f"{'all 90-day searches':<22} {len(every):>4} {statistics.median(every):>7.1f} "
              f"{percentile(every, .95):>7.1f} {percentile(every, .99):>7.1f} {max(every):>7.1f}")
        print(f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} cores)")
    finally:
        if not args.keep:
            ClickHouse(settings).execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
