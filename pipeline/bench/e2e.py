"""`make bench` (`python -m pipeline.bench`): end-to-end throughput and latency of the worker, against the naive
baseline (pipeline.bench.naive) in the same run (issue #9).

    python -m pipeline.bench [--events 600000] [--rate 2000] [--latency-seconds 30] [--no-naive] [--workers 2]

One run, in this order (each phase on its own topic prefix `bench<stamp><phase>`, its own consumer group and
its own ClickHouse database, dropped at the end; the run's topics are deleted when it ends, unless
`--keep-topics`):

1. input: the district simulator's day (`pipeline.simulate`), sized to about `--events` messages: mostly
   sensor readings, then hotline tickets, feedback and patrol reports, 1 % malformed;
2. stages, in process on the same input: decode, sensor state, locate, correlate + dispatch, dispatch alone and
   the ClickHouse sink, each next to its naive counterpart (CPU-time rates, median over batches);
   (sink: `pipeline.bench.sink` at 200,000 rows in batches of 50,000, rows and column builders, both
   transports; its events rows/s over HTTP from column builders is the issue #6 target;)
3. throughput: the input produced to the raw topics first, then one worker started; events/s from its first
   output to the last row stored in ClickHouse and the last message produced (assignments, case state), and
   the worker's peak memory (VmHWM); the same again with `--workers` workers in one consumer group;
4. naive: the baseline consumes the same raw topics (its own group, database and output topics);
5. latency: a fresh worker, a producer pacing the input at `--rate` events/s for `--latency-seconds`, then
   the rest as fast as it goes; a consumer on the assignments topic; produce-to-assignment time of each case's
   first dispatch (cases are opened by tickets, patrol reports and sensor alarms: readings make no assignment);
   notify: the same paced input through a worker and a notifier (pipeline.bench.notify): assignment-to-delivery
   time of each priority-1 notification at a local receiver;
   web: the day's cases on a web server, 200 live streams and 100 requests/s on feed and board
   (pipeline.bench.web), and the assignment-to-team-feed latency;
6. state (`--month-days`, default 30, 0 to skip): a worker fed a month of a whole district: reports and
   feedback of that many simulated days and one reading a day from each of `--month-sensors` sensors
   (default 61,000, Hongkou's installed base), so every sensor has state; its peak memory (VmHWM) with a
   month of cases, sensor states and recurrence history;
7. recovery (phase `recovery`, issue #23): that worker killed (SIGKILL) once it is done, a tail of the month
   held back is produced, and a new worker started: seconds until its first output and until its lag is zero
   again (`recovery_s`; pipeline.bench.recovery).

Each throughput run keeps its workers' CPU-µs per message (`cpu_us_per_message`, CPU between first and last
output over messages) and, once the naive phase ran, its rate over the baseline's (`vs_naive`); the naive
phase keeps its own CPU-µs per message (the bench process's CPU while it runs).

The results are printed as a table and written to var/bench/<stamp>.json with library versions and machine
facts. Stage and end-to-end figures are medians or whole-run rates measured in this run; ratios compare
figures of the same run, never of another machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from pipeline.bench import web as web_phase
from pipeline.bench.harness import (
    DAY_EVENTS,
    LIBRARIES,
    MONTH_SENSORS,
    PHASES,
    BenchConfig,
    BenchInput,
    build_input,
    cpu_seconds,
    day_config,
    isolated,
    month_config,
    peak_memory_mib,
    prepared,
    produce,
    workers,
)
from pipeline.bench.latency import (
    run_latency,
)
from pipeline.bench.notify import run_phase
from pipeline.bench.recovery import run_month
from pipeline.bench.report import annotate, render, targets
from pipeline.bench.stages import (
    run_chain,
    time_stages,
)
from pipeline.bench.watch import Watcher, distinct_counts, retrying
from pipeline.config import ROOT, Settings, Topics, environ

SINK_ROWS, SINK_BATCH = 200_000, 50_000       # the sink phase: pipeline.bench.sink at this size


# -- end to end: throughput --------------------------------------------------------------------------------

def _worker_outputs(t: Topics) -> list[str]:
    """The output topics to watch (the worker's groups' committed offsets say when it is done)."""
    return [t.assignments, t.case_state, t.located, t.deadletter, t.unlocated]


def run_throughput(base: Settings, inp: BenchInput, n_workers: int, tag: str, cfg: BenchConfig,
                   expected: dict[str, int] | None = None, stages: Sequence[str] = ("all",)) -> dict[str, Any]:
    """Produce the input first, then start `n_workers` workers (each as one process per stage of `stages`) and
    time them through it (see module docs)."""
    s = isolated(base, tag)
    with prepared(s):
        produce_s = produce(s, inp.messages)
        watcher = Watcher(s, s.consumer_groups(), _worker_outputs(s.topics))
        try:
            with workers(s, n_workers, inp.registry, cfg.out_dir / "logs", dict(cfg.worker_env), stages) as procs:
                done = watcher.watch(cfg.timeout_s, alive=lambda: all(p.poll() is None for p in procs),
                                     probe=lambda: [cpu_seconds(p.pid) for p in procs])
                memory = [peak_memory_mib(p.pid) for p in procs]
                # CPU the workers used between their first and last output: busy share of the run
                cpu = [b - a for a, b in zip(done.probe_first or [], done.probe_last or [], strict=False)]
                exits = [p.poll() for p in procs]
            # a run cut by the timeout is rated by what the group committed, not by the whole input
            processed = len(inp.messages) if done.finished else retrying(watcher.processed)
        finally:
            watcher.close()
        stored = distinct_counts(s)
    result: dict[str, Any] = {
        "workers": n_workers, "stages": list(stages), "messages": len(inp.messages), "processed": processed,
        "produce_s": produce_s,
        "seconds": done.seconds, "events_per_s": processed / done.seconds, "finished": done.finished,
        "peak_rss_mib": memory,
        "worker_cpu_s": cpu, "worker_busy": [c / done.seconds for c in cpu],
        "cpu_us_per_message": sum(cpu) / processed * 1e6 if processed and cpu else float("nan"),
        "stored": stored, "assignments": done.counts.get(s.topics.assignments, 0),
        "deadletters": done.counts.get(s.topics.deadletter, 0), "prefix": s.topic_prefix,
        "worker_exit_codes": [e for e in exits if e is not None],
    }
    if expected:
        result["complete"] = all(stored.get(k, 0) >= expected[k] for k in ("events", "cases", "reading_minutes"))
    return result


def run_naive(base: Settings, raw: Topics, inp: BenchInput, world: Any, tag: str,
              cfg: BenchConfig, routes: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """The naive pipeline over the raw topics a throughput phase filled (its own group, database, outputs);
    `routes`, when given, receives case id -> (team, rule id) of each first dispatch."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from pipeline.bench.naive import NaivePipeline, run_from_kafka
    from pipeline.bench.naiveparts import NaiveDecoder, NaiveLocator
    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.sink.transport import ClickHouse
    from pipeline.stages.registry import load_registry, load_types
    from rules.engine import DEFAULT_RULES
    from rules.naive import NaiveRuleset

    s = isolated(base, tag)
    with prepared(s):
        opts = s.kafka_client_options()
        consumer = KafkaConsumer(group_id=s.app_id, enable_auto_commit=True, **opts)
        producer = KafkaProducer(**opts)
        db = ClickHouse(s)
        try:
            raw_topics = [raw.raw_hotline, raw.raw_patrol, raw.raw_iot, raw.case_updates]
            tps = [TopicPartition(t, p) for t in raw_topics for p in (consumer.partitions_for_topic(t) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(tps)
            pipe = NaivePipeline(inputs=raw, outputs=s.topics, decoder=NaiveDecoder(default_taxonomy()),
                                 locator=NaiveLocator(world.index), gazetteer=world.gazetteer,
                                 sensors=load_registry(inp.registry, load_types()),
                                 router=NaiveRuleset(DEFAULT_RULES), db=db, sender=producer)
            cpu0 = time.process_time()       # the bench process is the naive pipeline (and its clients' threads)
            counts = run_from_kafka(pipe, consumer, ends, producer, timeout_s=cfg.timeout_s)
            cpu = time.process_time() - cpu0
        finally:
            consumer.close()
            producer.close()
            db.close()
        stored = distinct_counts(s)
    if routes is not None:
        routes.update(counts.routes)
    seconds = max(1e-3, counts.last_at - (counts.first_at or counts.last_at))
    return {"messages": counts.consumed, "seconds": seconds, "finished": counts.finished,
            "events_per_s": counts.consumed / seconds, "cpu_s": cpu,
            "cpu_us_per_message": cpu / counts.consumed * 1e6 if counts.consumed else float("nan"),
            "assignments": counts.assignments, "deadletters": counts.deadletters, "inserts": counts.inserts,
            "rows": counts.rows, "stored": stored, "routes": len(counts.routes)}


# -- machine facts and the report -----------------------------------------------------------------------

def machine_facts(settings: Settings) -> dict[str, Any]:
    """CPU, cores, memory, load, Python, library, Kafka and ClickHouse versions, for comparing two runs."""
    facts: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                             "cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        facts["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    with suppress(OSError), open("/proc/meminfo", encoding="utf-8") as fh:
        kib = next((int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal:")), 0)
        facts["memory_gib"] = round(kib / 2**20, 1)
    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    facts["libraries"] = libs
    jars = sorted((settings.var_dir / "kafka" / "libs").glob("kafka_2.*-*.jar"))
    facts["kafka"] = next((j.stem.split("-", 1)[1] for j in jars if j.stem.count("-") == 1), "unknown")
    try:
        from pipeline.sink.transport import ClickHouse

        db = ClickHouse(settings, database="default")
        facts["clickhouse"] = str(db.execute("SELECT version()")[0][0])
        db.close()
    except Exception as err:  # the report still has every other fact
        facts["clickhouse"] = f"unknown ({type(err).__name__})"
    return facts


# -- the run --------------------------------------------------------------------------------------------

def run_bench(cfg: BenchConfig, base: Settings | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every phase in order (module docstring); returns the result that is printed and written as JSON. The
    run's topics are deleted afterwards, however it ended, unless `cfg.keep_topics` (a month's input is about
    a gigabyte of broker disk)."""
    base = base or Settings.from_env()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    tag = "bench" + stamp[2:].replace("T", "").lower()
    try:
        return _run_phases(cfg, base, stamp, tag, log)
    finally:
        if not cfg.keep_topics:
            delete_run_topics(base, tag, log)


def delete_run_topics(base: Settings, tag: str, log: Callable[[str], None]) -> None:
    from pipeline.runtime.topics import delete_topics

    try:
        deleted = retrying(lambda: delete_topics(base, tag))
        log(f"  deleted the run's {len(deleted)} topics ({tag}*; --keep-topics keeps them)")
    except Exception as err:    # the result stands; say what is left behind and how to remove it
        log(f"bench: could not delete the run's topics: {err}; "
            f"python -m pipeline.cli topics delete --prefix {tag} --yes")


def _run_phases(cfg: BenchConfig, base: Settings, stamp: str, tag: str,
                log: Callable[[str], None]) -> dict[str, Any]:
    from pipeline.simulate.world import World

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    phases = cfg.phases if cfg.naive else cfg.phases - {"naive"}
    result: dict[str, Any] = {"format": "cityops-bench/1", "stamp": stamp, "prefix": tag,
                              "config": {k: _jsonable(v) for k, v in asdict(cfg).items()},
                              "machine": machine_facts(base), "throughput": []}
    t0 = time.monotonic()
    log(f"bench {tag}: simulating about {cfg.events:,} events...")
    world = World()
    inp = build_input(day_config(cfg.events, cfg.seed, cfg.day_events), world, cfg.out_dir, tag)
    log(f"  {len(inp.messages):,} messages; timing the stages in process...")
    if "stages" in cfg.phases:
        stages, chain = time_stages(inp, world, base, tag + "s")
    else:
        stages, chain = [], run_chain(inp, world)[0]
    result["stages"] = [{**asdict(s), "ratio": s.ratio} for s in stages]
    result["targets"] = []
    if "sink" in cfg.phases:
        from pipeline.bench.sink import run_sink_bench

        log(f"  the sink alone (pipeline.bench.sink, {SINK_ROWS:,} rows in batches of {SINK_BATCH:,})...")
        result["sink"] = run_sink_bench(base, SINK_ROWS, SINK_BATCH, repeats=3)
    result["input"] = {"messages": len(inp.messages), "topics": inp.counts(), "expected": chain.expected,
                       "sim": {"days": inp.simulation.config.days, "sensors": inp.simulation.config.sensors,
                               "start": inp.simulation.config.begin.isoformat()}}
    del chain
    one: dict[str, Any] | None = None
    if phases & {"throughput", "naive"}:
        log("  throughput, 1 worker in one process...")
        one = run_throughput(base, inp, 1, tag + "w1", cfg, result["input"]["expected"])
        result["throughput"].append({"label": "1 worker, one process", **one})
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
        log("  throughput, 1 worker as make run runs it (an ingest and a cases process)...")
        two = run_throughput(base, inp, 1, tag + "w1s", cfg, result["input"]["expected"], ("ingest", "cases"))
        result["throughput"].append({"label": "1 worker, ingest + cases processes", **two})
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if one is not None and "naive" in phases:
        log("  naive baseline on the same raw topics...")
        result["naive"] = run_naive(base, Topics.with_prefix(one["prefix"]), inp, world, tag + "nv", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if cfg.workers > 1 and "scaling" in phases:
        log(f"  throughput, {cfg.workers} workers in one group...")
        more = run_throughput(base, inp, cfg.workers, tag + f"w{cfg.workers}", cfg, result["input"]["expected"])
        result["throughput"].append({"label": f"{cfg.workers} workers, one group", **more})
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if cfg.latency_seconds > 0 and "latency" in phases:
        log(f"  latency at {cfg.rate:,.0f} events/s for {cfg.latency_seconds:g} s, then at full speed...")
        result["latency"] = run_latency(base, inp, tag + "lt", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if cfg.latency_seconds > 0 and "notify" in phases:

        log(f"  notification latency (worker + notifier) at {cfg.rate:,.0f} events/s for {cfg.latency_seconds:g} s...")
        result["notify"] = run_phase(base, inp, tag + "nt", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if "web" in phases:                      # the web under a district's load (pipeline.bench.web)
        result["web"] = web_phase.run_phase(base, inp, tag + "web", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if cfg.month_days > 0 and phases & {"month", "recovery"}:
        log(f"  a worker with {cfg.month_days:g} simulated days of state, {cfg.month_sensors:,} sensors...")
        month = build_input(month_config(cfg.month_days, cfg.month_sensors, cfg.seed), world, cfg.out_dir,
                            tag + "-month")
        log(f"  {len(month.messages):,} messages" + ("; then killed (SIGKILL) and restarted"
                                                     if "recovery" in phases else ""))
        run, back = run_month(base, month, tag + "mo", cfg, recovery="recovery" in phases)
        result["month"] = {"days": cfg.month_days, "sensors": cfg.month_sensors, **run}
        if back is not None:
            result["recovery"] = back
    result["targets"] = targets(result)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["wall_s"] = time.monotonic() - t0
    return result


def _jsonable(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Write (or overwrite) var/bench/<stamp>.json, with the targets as far as the run got."""
    if "input" in result:
        annotate(result)
        result["targets"] = targets(result)
    path = out_dir / f"{result['stamp']}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                                  default=str))
    return path


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    env = environ().get
    p.add_argument("--events", type=int, default=int(env("CITYOPS_BENCH_EVENTS", "600000")),
                   help="about how many input messages (default 600000, env CITYOPS_BENCH_EVENTS)")
    p.add_argument("--day-events", type=int, default=DAY_EVENTS,
                   help=f"messages in one simulated day of the district (sets its sensor count, default "
                        f"{DAY_EVENTS}); --events beyond it spans more days")
    p.add_argument("--rate", type=float, default=2000.0, help="offered load of the latency phase (events/s)")
    p.add_argument("--latency-seconds", type=float, default=float(env("CITYOPS_BENCH_LATENCY_S", "30")),
                   help="how long to offer --rate (0 skips the latency phase)")
    p.add_argument("--latency-max-events", type=int, default=60_000,
                   help="messages sent at full speed after the paced part")
    p.add_argument("--workers", type=int, default=2, help="workers of the scaling run (1 skips it)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    p.add_argument("--month-days", type=float, default=float(env("CITYOPS_BENCH_MONTH_DAYS", "30")),
                   help="simulated days of state for the memory run (default 30, 0 skips it)")
    p.add_argument("--month-sensors", type=int, default=MONTH_SENSORS,
                   help=f"sensors of the memory run, one reading each a day (default {MONTH_SENSORS:,})")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take before it is cut")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--phases", default=",".join(sorted(PHASES)),
                   help=f"comma-separated subset of {', '.join(sorted(PHASES))} (default: all)")
    p.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the workers, e.g. CITYOPS_BATCH=5000 (repeatable)")
    p.add_argument("--keep-topics", action="store_true",
                   help="keep the run's topics (bench<stamp>*) on the broker afterwards, to inspect them")
    a = p.parse_args(argv)
    phases = frozenset(x.strip() for x in a.phases.split(",") if x.strip())
    if not phases <= PHASES:
        p.error(f"--phases: unknown {', '.join(sorted(phases - PHASES))}")
    if any("=" not in kv for kv in a.worker_env):
        p.error("--worker-env: NAME=VALUE")
    if a.events < 1000:
        p.error("--events: at least 1000")
    if a.rate <= 0 or a.workers < 1:
        p.error("--rate must be positive and --workers at least 1")
    if a.day_events < 1000:
        p.error("--day-events: at least 1000")
    return BenchConfig(events=a.events, day_events=a.day_events, rate=a.rate, latency_seconds=a.latency_seconds,
                       latency_max_events=a.latency_max_events, workers=a.workers, naive=not a.no_naive,
                       month_days=a.month_days, month_sensors=a.month_sensors, timeout_s=a.timeout, seed=a.seed,
                       out_dir=a.out, phases=phases, keep_topics=a.keep_topics,
                       worker_env=tuple(tuple(kv.split("=", 1)) for kv in a.worker_env))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = run_bench(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    path = write_result(result, cfg.out_dir)
    print(render(result))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
