"""`make bench` (`python -m pipeline.bench`): end-to-end throughput and latency of the worker, against the naive
baseline (pipeline.naive) in the same run (issue #9).

    python -m pipeline.bench [--events 600000] [--rate 2000] [--latency-seconds 30] [--no-naive] [--workers 2]

One run, in this order (each phase on its own topic prefix `bench<stamp><phase>`, its own consumer group and
its own ClickHouse database, dropped at the end; the run's topics are deleted when it ends, unless
`--keep-topics`):

1. input: the district simulator's day (`pipeline.simulate`), sized to about `--events` messages: mostly
   sensor readings, then hotline tickets, feedback and patrol reports, 1 % malformed;
2. stages, in process on the same input: decode, sensor state, locate, correlate + dispatch, dispatch alone and
   the ClickHouse sink, each next to its naive counterpart (CPU-time rates, median over batches);
   (sink: `pipeline.sink_bench` at 200,000 rows in batches of 50,000, rows and column builders, both
   transports; its events rows/s over HTTP from column builders is the issue #6 target;)
3. throughput: the input produced to the raw topics first, then one worker started; events/s from its first
   output to the last row stored in ClickHouse and the last message produced (assignments, case state), and
   the worker's peak memory (VmHWM); the same again with `--workers` workers in one consumer group;
4. naive: the baseline consumes the same raw topics (its own group, database and output topics);
5. latency: a fresh worker, a producer pacing the input at `--rate` events/s for `--latency-seconds`, then
   the rest as fast as it goes; a consumer on the assignments topic; produce-to-assignment time of each case's
   first dispatch (cases are opened by tickets, patrol reports and sensor alarms: readings make no assignment);
   notify: the same paced input through a worker and a notifier (pipeline.notify.bench): assignment-to-delivery
   time of each priority-1 notification at a local receiver;
   web: the day's cases on a web server, 200 live streams and 100 requests/s on feed and board
   (pipeline.web.bench_phase), and the assignment-to-team-feed latency;
6. state (`--month-days`, default 30, 0 to skip): a worker fed a month of a whole district: reports and
   feedback of that many simulated days and one reading a day from each of `--month-sensors` sensors
   (default 61,000, Hongkou's installed base), so every sensor has state; its peak memory (VmHWM) with a
   month of cases, sensor states and recurrence history.

The results are printed as a table and written to var/bench/<stamp>.json with library versions and machine
facts. Stage and end-to-end figures are medians or whole-run rates measured in this run; ratios compare
figures of the same run, never of another machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.config import ROOT, Settings, Topics
from pipeline.simulate import SimConfig, SimMessage, Simulation, simulate
from pipeline.simulate.config import SHANGHAI

TARGET_EVENTS_PER_S = 30_000
TARGET_RATIO = 4.0
TARGET_P99_MS = 250.0
TARGET_MEMORY_MIB = 1024.0
MONTH_SENSORS = 61_000                  # a whole district's sensors (Hongkou, DOMAIN.md)
READINGS_PER_SENSOR_DAY = 96            # the simulator's default 15-minute reading interval
DAY_EVENTS = 200_000                    # the bench district's day: about 2,000 sensors and its reports
STAGE_BATCH = 2000                      # the worker's default batch (CITYOPS_BATCH)
SOURCE_OF = {"raw_hotline": "hotline", "raw_patrol": "patrol"}
PHASES = frozenset({"stages", "sink", "throughput", "naive", "scaling", "latency", "notify", "web", "month"})
SINK_ROWS, SINK_BATCH = 200_000, 50_000       # the sink phase: pipeline.sink_bench at this size
LIBRARIES = ("faust-streaming", "aiokafka", "kafka-python", "crc32c", "clickhouse-driver", "shapely", "numpy",
             "orjson", "PyYAML")


@dataclass(frozen=True)
class BenchConfig:
    """What to run; every field has a command-line flag (see `parse_args`)."""

    events: int = 600_000
    day_events: int = DAY_EVENTS                        # the simulated district's messages a day (its sensors)
    rate: float = 2000.0
    latency_seconds: float = 30.0
    latency_max_events: int = 60_000
    workers: int = 2
    naive: bool = True
    month_days: float = 30.0
    month_sensors: int = MONTH_SENSORS
    timeout_s: float = 300.0
    seed: int = 1
    out_dir: Path = ROOT / "var" / "bench"
    phases: frozenset[str] = PHASES
    worker_env: tuple[tuple[str, str], ...] = ()       # extra worker environment (CITYOPS_BATCH=5000, ...)
    keep_topics: bool = False                           # leave the run's topics on the broker, to inspect them


# -- the input --------------------------------------------------------------------------------------------

@dataclass
class BenchInput:
    """The simulated messages (time order), the simulation (its truth) and the sensor registry file."""

    simulation: Simulation
    messages: list[SimMessage]
    registry: Path

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            out[m.topic] = out.get(m.topic, 0) + 1
        return out


def day_config(events: int, seed: int, day_events: int = DAY_EVENTS) -> SimConfig:
    """A simulation of about `events` messages: a district whose day has about `day_events` messages (the sensor
    count is what makes the volume: readings are ~97 % of them), over as many days as `events` needs. So a
    longer run has the same mix of sources, only more of it; more than 61,000 sensors' worth spans days too."""
    sensors = max(10, min(61_000, round(min(events, day_events) * 0.97 / READINGS_PER_SENSOR_DAY)))
    days = max(1.0, events * 0.97 / (sensors * READINGS_PER_SENSOR_DAY))
    return SimConfig(days=min(days, 60.0), sensors=sensors, seed=seed)


def month_config(days: float, sensors: int, seed: int) -> SimConfig:
    """A month of reports and feedback with one reading per sensor a day: the case state of a month without
    the month's 8 million readings (which change no state but the per-sensor one)."""
    return SimConfig(days=days, sensors=sensors, reading_interval_min=1440.0, seed=seed + 1)


def build_input(config: SimConfig, world: Any, var_dir: Path, name: str) -> BenchInput:
    sim = simulate(config, world)
    registry = var_dir / f"{name}-sensors.csv"
    sim.write_registry(registry)
    return BenchInput(sim, list(sim.messages()), registry)


# -- isolation: a prefix, a group and a database per phase -------------------------------------------------

def isolated(base: Settings, tag: str) -> Settings:
    """`base` with topics, consumer group and ClickHouse database of its own (like tests' isolated_settings)."""
    return replace(base, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                   app_id=f"cityops-{tag}")


@contextmanager
def prepared(settings: Settings) -> Iterator[Settings]:
    """Topics and schema created for the phase; its ClickHouse database dropped afterwards (its topics are
    deleted with the whole run's, by `run_bench`: the naive phase reads the first phase's raw topics)."""
    from pipeline.migrate import migrate
    from pipeline.topics import ensure_topics

    retrying(lambda: ensure_topics(settings))
    retrying(lambda: migrate(settings))
    try:
        yield settings
    finally:
        drop_database(settings)


def drop_database(settings: Settings) -> None:
    from pipeline.sink import ClickHouse

    for attempt in range(10):
        try:
            db = ClickHouse(settings, database="default")
            try:
                db.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
                return
            finally:
                db.close()
        except Exception as err:  # the server restarting: retry a while, then say what is left behind
            if attempt == 9:
                print(f"bench: could not drop {settings.clickhouse_database}: {err}", file=sys.stderr)
            time.sleep(2.0)


def produce(settings: Settings, messages: Sequence[SimMessage]) -> float:
    """Produce every message at full speed (acks=all); returns the seconds it took."""
    from pipeline.simulate.produce import produce_messages

    return produce_messages(settings, messages, len(messages), "max").seconds


# -- the worker as a subprocess ---------------------------------------------------------------------------

@contextmanager
def workers(settings: Settings, n: int, registry: Path, log_dir: Path, extra_env: dict[str, str] | None = None,
            stages: Sequence[str] = ("all",)) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`n` workers in one consumer group, each as one `cityops worker` process per stage of `stages` (("all",):
    one process; ("ingest", "cases"): two, as `make run` runs it); stopped (TERM, then KILL) afterwards.

    The quiet-grid SLA sweep (a timer, not per-event work) is set to an hour so that it cannot add
    assignments after the input is done; busy grids are still escalated on every batch.
    """
    env = {**os.environ, **settings.to_env(), "CITYOPS_SENSORS": str(registry),
           "CITYOPS_SLA_CHECK_INTERVAL": "3600", **(extra_env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for k in range(n):
            for stage in stages:
                name = f"{settings.topic_prefix}-worker{k}" + ("" if stage == "all" else f"-{stage}")
                with (log_dir / f"{name}.log").open("ab") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "warn", "--stage", stage],
                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            stop(p)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process used so far (/proc/<pid>/stat); NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def peak_memory_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB; NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- watching a run ---------------------------------------------------------------------------------------

@dataclass
class Completion:
    """What a watched run did: wall times of its first and last observed output and the final counts."""

    first_at: float | None = None
    last_at: float | None = None
    finished: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    probe_first: Any = None          # `probe()` when the first change was seen, and at the last one
    probe_last: Any = None

    @property
    def seconds(self) -> float:
        if self.first_at is None or self.last_at is None:
            return float("nan")
        return max(1e-3, self.last_at - self.first_at)


class Watcher:
    """Polls a phase's outputs: ClickHouse row counts (every insert raises one) and the end offsets of the
    output topics, and the consumer group's committed offsets on the input topics.

    A run is done when the group committed every input offset (raw topics and the internal located topic) and
    nothing changed for `quiet_s`. The first and last times anything changed bound the run; they are seen
    within `every_s` of happening.
    """

    def __init__(self, settings: Settings, groups: dict[str, list[str]] | None, outputs: Sequence[str],
                 every_s: float = 0.1, quiet_s: float = 3.0) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        from pipeline.sink import ClickHouse

        opts = settings.kafka_client_options()
        self.consumer = KafkaConsumer(group_id=None, client_id="cityops-bench", **opts)
        self.admin = KafkaAdminClient(client_id="cityops-bench", **opts)
        self.db = ClickHouse(settings)
        self.groups, self.outputs = dict(groups or {}), list(outputs)
        self.raw = {t for t in settings.consumer_groups()[f"{settings.app_id}-ingest"]}
        self.every_s, self.quiet_s = every_s, quiet_s

    def close(self) -> None:
        for c in (self.consumer, self.admin, self.db):
            with suppress(Exception):
                c.close()

    def _tps(self, topics: Sequence[str]) -> list[Any]:
        from kafka import TopicPartition

        return [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]

    def snapshot(self, previous: dict[str, int] | None = None) -> dict[str, int]:
        """Row counts and output end offsets; `previous` again while the server is briefly unreachable (a
        shared machine's server may be restarted by someone's outage test; the worker's sink retries too)."""
        try:
            return self._snapshot()
        except Exception:
            if previous is None:
                raise
            return previous

    def _snapshot(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT (SELECT count() FROM events), (SELECT count() FROM cases), "
            "(SELECT count() FROM case_transitions), (SELECT count() FROM sensor_readings)")[0]
        out = dict(zip(("events", "cases", "transitions", "readings"), (int(v) for v in row), strict=True))
        ends = self.consumer.end_offsets(self._tps(self.outputs))
        for tp, end in ends.items():
            out[tp.topic] = out.get(tp.topic, 0) + int(end)
        return out

    def processed(self) -> int:
        """Raw input messages the groups committed (what a cut run did process)."""
        total = 0
        for group in self.groups:
            committed = _group_offsets(self.admin, group)
            total += sum(o.offset for tp, o in committed.items() if tp.topic in self.raw and o.offset >= 0)
        return total

    def lag(self) -> int:
        """Input messages not yet committed by the groups (every message when a group committed nothing)."""
        total = 0
        for group, inputs in self.groups.items():
            ends = self.consumer.end_offsets(self._tps(inputs))
            committed = _group_offsets(self.admin, group)
            total += sum(max(0, end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                                       else 0)) for tp, end in ends.items())
        return total

    def _lag_or_none(self) -> int | None:
        try:
            return self.lag()
        except Exception:
            return None

    def watch(self, timeout_s: float, alive: Callable[[], bool] = lambda: True,
              done: Callable[[dict[str, int]], bool] | None = None,
              probe: Callable[[], Any] = lambda: None) -> Completion:
        """Poll until done (see the class docstring, or `done(counts)` when given), the time is up, or `alive()`
        turns False. `probe()` is sampled at the first and the last change (e.g. the workers' CPU time)."""
        c = Completion()
        last = self.snapshot()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            time.sleep(self.every_s)
            now_counts, now = self.snapshot(last), time.time()
            if now_counts != last:
                if c.first_at is None:
                    c.first_at, c.probe_first = now, probe()
                c.last_at, last, c.probe_last = now, now_counts, probe()
            quiet = c.last_at is not None and now - c.last_at >= self.quiet_s
            if quiet and (done(now_counts) if done is not None else self._lag_or_none() == 0):
                c.finished = True
                break
        c.counts = last
        return c


def _group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """Committed offsets of a consumer group (kafka-python 3 renamed the call to `list_group_offsets`)."""
    if hasattr(admin, "list_group_offsets"):
        return dict(admin.list_group_offsets({group: None}).get(group, {}))
    return dict(admin.list_consumer_group_offsets(group))


def retrying(fn: Callable[[], Any], seconds: float = 60.0) -> Any:
    """`fn()`, tried again every 2 s for `seconds` while it fails (a restarting server), then its error."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def distinct_counts(settings: Settings) -> dict[str, int]:
    """Logical rows stored (distinct keys), to check that a run stored everything."""
    return retrying(lambda: _distinct_counts(settings))  # type: ignore[no-any-return]


def _distinct_counts(settings: Settings) -> dict[str, int]:
    from pipeline.sink import ClickHouse

    db = ClickHouse(settings)
    try:
        row = db.execute("SELECT (SELECT uniqExact(event_id) FROM events), (SELECT uniqExact(case_id) FROM cases), "
                         "(SELECT uniqExact(sensor_id, minute) FROM sensor_readings)")[0]
    finally:
        db.close()
    return {"events": int(row[0]), "cases": int(row[1]), "reading_minutes": int(row[2])}


# -- stages, in process -----------------------------------------------------------------------------------

@dataclass
class StageRate:
    """One stage's rate on this run's input: the median over batches of items per CPU second (wall second for
    the sink, whose work is mostly the server's), and the naive counterpart's when there is one."""

    stage: str
    unit: str
    items: int
    rate: float
    naive_rate: float | None = None
    clock: str = "cpu"

    @property
    def ratio(self) -> float | None:
        return None if not self.naive_rate else self.rate / self.naive_rate


def median_rate(batches: Sequence[Sequence[Any]], work: Callable[[Sequence[Any]], Any],
                clock: Callable[[], float] = time.process_time) -> tuple[float, int]:
    """(median of len(batch) / seconds over the batches, items done) for `work` applied to each batch."""
    rates: list[float] = []
    done = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        t = clock()
        work(batch)
        rates.append(len(batch) / max(clock() - t, 1e-6))
        done += len(batch)
    return (statistics.median(rates) if rates else float("nan")), done


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _each(fn: Callable[[Any], Any], ignore: type[Exception]) -> Callable[[Sequence[Any]], None]:
    def run(batch: Sequence[Any]) -> None:
        for item in batch:
            with suppress(ignore):
                fn(item)
    return run


@dataclass
class StageRun:
    """The worker's pure chain over the input (what the stage timings need, and the totals a run must reach)."""

    located: list[tuple[str, bytes]] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    sink_batches: list[Any] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)


def run_chain(inp: BenchInput, world: Any) -> tuple[StageRun, dict[str, float]]:
    """The worker's chain (Ingest, then CaseStage) over the input in worker-sized batches of one topic at a
    time, timed per stage (CPU); returns what it produced and the median rates."""
    from pipeline.cases import CaseBook, CorrelationPolicy
    from pipeline.decode import default_decoder
    from pipeline.flow import CaseStage, Ingest, Message
    from pipeline.records import ReadingColumns, SinkBatch
    from pipeline.sensors import SensorState, load_registry, load_types

    ingest = Ingest(decoder=default_decoder(), grid=world.index, gazetteer=world.gazetteer,
                    sensors=load_registry(inp.registry, load_types()))
    stage = CaseStage(world.rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, SensorState] = {}
    run = StageRun()
    rates: dict[str, list[float]] = {"readings": [], "reports": [], "updates": [], "cases": []}
    events: set[str] = set()
    cases: set[str] = set()
    minutes: set[tuple[str, int]] = set()
    assignments = 0
    offset = 0
    for topic, group in groupby(inp.messages, key=lambda m: m.topic):
        msgs = []
        for m in group:
            msgs.append(Message(topic, 0, offset, m.value, m.key))
            offset += 1
        for batch in chunks(msgs, STAGE_BATCH):
            columns = ReadingColumns()
            t = time.process_time()
            if topic in SOURCE_OF:
                res, kind = ingest.reports(SOURCE_OF[topic], batch), "reports"  # type: ignore[arg-type]
            elif topic == "raw_iot":
                # as the worker does it: sensor-minute rows straight into the sink's column builders
                res, kind = ingest.readings(batch, states, columns), "readings"
            else:
                res, kind = ingest.updates(batch), "updates"
            rates[kind].append(len(batch) / max(time.process_time() - t, 1e-6))
            t = time.process_time()
            out = stage.apply(res.located, books)
            if res.located:
                rates["cases"].append(len(res.located) / max(time.process_time() - t, 1e-6))
            run.located += res.located
            run.sink_batches.append(SinkBatch(readings=res.readings, reading_columns=columns))
            run.sink_batches.append(SinkBatch(cases=list(out.cases.values()), events=out.events,
                                              transitions=out.transitions))
            events.update(e.event_id for e in out.events)
            cases.update(out.cases)
            minutes.update(zip(columns.sensor_id, columns.minute, strict=True))
            assignments += len(out.assignments)
    run.expected = {"events": len(events), "cases": len(cases), "reading_minutes": len(minutes),
                    "assignments": assignments, "located": len(run.located)}
    return run, {k: statistics.median(v) for k, v in rates.items() if v}


def time_stages(inp: BenchInput, world: Any, base: Settings, tag: str) -> tuple[list[StageRate], StageRun]:
    """Every stage of the worker's chain on the input, each next to the naive baseline's way of doing it."""
    from pipeline.decode import InvalidEvent, default_decoder
    from pipeline.flow import decode_located
    from pipeline.naive import NaiveDecoder, NaiveLocator
    from pipeline.sensors import SensorState, load_registry, load_types, observe
    from pipeline.taxonomy import default_taxonomy
    from rules.engine import DEFAULT_RULES
    from rules.naive import NaiveRuleset
    from rules.recurrence import RecurrenceHistory

    run, chain = run_chain(inp, world)
    out: list[StageRate] = []
    fast, naive = default_decoder(), NaiveDecoder(default_taxonomy())
    by_topic = {t: [m.value for m in inp.messages if m.topic == t]
                for t in ("raw_iot", "raw_hotline", "raw_patrol", "case_updates")}
    f_dec = {"raw_iot": fast.reading, "raw_hotline": fast.hotline, "raw_patrol": fast.patrol,
             "case_updates": fast.case_update}
    n_dec = {"raw_iot": naive.reading, "raw_hotline": naive.hotline, "raw_patrol": naive.patrol,
             "case_updates": naive.update}
    for topic, values in by_topic.items():
        if not values:
            continue
        rate, n = median_rate(chunks(values, STAGE_BATCH), _each(f_dec[topic], InvalidEvent))
        sample = chunks(values, STAGE_BATCH)[:10]
        nrate, _ = median_rate(sample, _each(n_dec[topic], InvalidEvent))
        out.append(StageRate(f"decode {topic.removeprefix('raw_').replace('_', '-')}", "msg", n, rate, nrate))

    registry = load_registry(inp.registry, load_types())

    def naive_readings(batch: Sequence[bytes]) -> None:
        states: dict[str, SensorState] = {}
        for raw in batch:
            with suppress(InvalidEvent):
                r = naive.reading(raw)
                observe(states.setdefault(r.sensor_id, SensorState()), r, registry.get(r.sensor_id))

    nrate, _ = median_rate(chunks(by_topic["raw_iot"], STAGE_BATCH)[:10], naive_readings)
    out.append(StageRate("readings: decode + alarm state + minute rows", "msg", len(by_topic["raw_iot"]),
                         chain.get("readings", float("nan")), nrate))
    out.append(StageRate("reports: decode + geocode + locate", "msg",
                         len(by_topic["raw_hotline"]) + len(by_topic["raw_patrol"]),
                         chain.get("reports", float("nan"))))
    items = [decode_located(v) for _, v in run.located]
    evs = [e for e in items if hasattr(e, "location")]
    pts = np.array([(e.lon, e.lat) for e in evs if e.lon is not None and e.lat is not None], dtype=np.float64)  # type: ignore[union-attr]
    if len(pts):
        tiled = np.resize(pts, (max(len(pts), 20 * STAGE_BATCH), 2))
        blocks: list[Any] = [tiled[i:i + STAGE_BATCH] for i in range(0, len(tiled), STAGE_BATCH)]
        rate, n = median_rate(blocks, lambda b: world.index.locate_batch(np.asarray(b)[:, 0], np.asarray(b)[:, 1]))
        locator = NaiveLocator(world.index)
        nrate, _ = median_rate(chunks(pts[:4000].tolist(), 500), lambda b: [locator.locate(x, y) for x, y in b])
        out.append(StageRate("locate (grid lookup)", "point", n, rate, nrate))
    out.append(StageRate("correlate + dispatch (CaseStage)", "item", len(run.located),
                         chain.get("cases", float("nan")), _naive_cases(run.located[:3000])))
    history = RecurrenceHistory()
    rules, naive_rules = world.rules, NaiveRuleset(DEFAULT_RULES)
    rate, n = median_rate(chunks(evs, STAGE_BATCH), lambda b: [rules.dispatch(e, history) for e in b])
    nrate, _ = median_rate(chunks(evs[:3000], 500), lambda b: [naive_rules.dispatch(e, history) for e in b])
    out.append(StageRate("dispatch (rules)", "event", n, rate, nrate))
    out.append(sink_rate(base, tag, run.sink_batches))
    return out, run


def _naive_cases(located: Sequence[tuple[str, bytes]]) -> float:
    """Items/CPU-s of the same CaseBooks routed by the naive rules, one item at a time (batches of 1)."""
    from pipeline.cases import CaseBook, CorrelationPolicy
    from pipeline.flow import CaseStage
    from rules.engine import DEFAULT_RULES
    from rules.naive import NaiveRuleset

    stage = CaseStage(NaiveRuleset(DEFAULT_RULES), CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    rate, _ = median_rate(chunks(list(located), 500), lambda b: [stage.apply([item], books) for item in b])
    return rate


def sink_rate(base: Settings, tag: str, batches: Sequence[Any]) -> StageRate:
    """Rows/s (wall, median over writes) of `ClickHouseSink.write` on the run's own rows merged into writes of
    up to 10,000 rows (what the worker's agents hand it), and of row-dict INSERTs of 100 rows of the same
    tables (the naive way) on the first 3,000 of those rows, into a scratch database."""
    from pipeline.naive import _COLUMNS, _row
    from pipeline.records import SinkBatch
    from pipeline.sink import ClickHouse, ClickHouseSink

    merged: list[SinkBatch] = []
    for b in batches:
        if not merged or len(merged[-1]) >= 5 * STAGE_BATCH:
            merged.append(SinkBatch())
        m = merged[-1]
        m.cases += b.cases
        m.events += b.events
        m.transitions += b.transitions
        m.readings += b.readings
        m.event_columns.extend(b.event_columns)
        m.reading_columns.extend(b.reading_columns)
    merged = [m for m in merged if len(m)]
    tables = {"sensor_readings": "readings", "events": "events", "case_transitions": "transitions",
              "cases": "cases"}
    naive_rows = [(table, _row(r, _COLUMNS[table])) for m in merged[:3] for table, attr in tables.items()
                  for r in getattr(m, attr)]
    for m in merged[:3]:       # the worker's sensor-minute rows come as columns: the naive way gets them as rows
        cols = m.reading_columns.lists()
        naive_rows += [("sensor_readings", dict(zip(cols, values, strict=True)))
                       for values in zip(*cols.values(), strict=True)]
    naive_rows = naive_rows[:3000]
    with prepared(isolated(base, tag)) as s:
        sink = ClickHouseSink(s)
        rates = []
        try:
            for m in merged:
                t = time.perf_counter()
                sink.write(m)
                rates.append(len(m) / max(time.perf_counter() - t, 1e-6))
        finally:
            sink.close()
        db = ClickHouse(s)
        try:
            def insert(chunk: Sequence[tuple[str, dict[str, Any]]]) -> None:
                for table, group in groupby(chunk, key=lambda r: r[0]):
                    db.insert_dicts(table, _COLUMNS[table], [row for _, row in group])
            nrate, _ = median_rate(chunks(naive_rows, 100), insert, clock=time.perf_counter)
        finally:
            db.close()
    return StageRate("sink (ClickHouse insert)", "row", sum(len(m) for m in merged),
                     statistics.median(rates) if rates else float("nan"), nrate, clock="wall")


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

    from pipeline.naive import NaiveDecoder, NaiveLocator, NaivePipeline, run_from_kafka
    from pipeline.sensors import load_registry, load_types
    from pipeline.sink import ClickHouse
    from pipeline.taxonomy import default_taxonomy
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
            counts = run_from_kafka(pipe, consumer, ends, producer, timeout_s=cfg.timeout_s)
        finally:
            consumer.close()
            producer.close()
            db.close()
        stored = distinct_counts(s)
    if routes is not None:
        routes.update(counts.routes)
    seconds = max(1e-3, counts.last_at - (counts.first_at or counts.last_at))
    return {"messages": counts.consumed, "seconds": seconds, "finished": counts.finished,
            "events_per_s": counts.consumed / seconds,
            "assignments": counts.assignments, "deadletters": counts.deadletters, "inserts": counts.inserts,
            "rows": counts.rows, "stored": stored, "routes": len(counts.routes)}


# -- end to end: latency --------------------------------------------------------------------------------

def first_reports(sim: Simulation) -> dict[tuple[str, bytes, datetime], str]:
    """(topic, key, time) of the message that opens each case of the truth -> the case id."""
    topic = {"hotline": "raw_hotline", "patrol": "raw_patrol", "iot": "raw_iot"}
    return {(topic[i.first.source], i.first.key.encode(), i.first.at): i.case_id for i in sim.truth.incidents}


def latency_slice(inp: BenchInput, cfg: BenchConfig) -> tuple[list[SimMessage], list[SimMessage]]:
    """(paced part, full-speed part) of the input, from 08:00 Shanghai on its first day: working hours, when
    tickets and patrols open cases; readings alone make no assignment to time."""
    begin = inp.simulation.config.begin.astimezone(SHANGHAI).replace(hour=8, minute=0, second=0)
    start = next((k for k, m in enumerate(inp.messages) if m.at >= begin), 0)
    paced = int(cfg.rate * cfg.latency_seconds)
    rest = inp.messages[start:] + inp.messages[:start]
    return rest[:paced], rest[paced:paced + cfg.latency_max_events]


def wait_for_group(settings: Settings, members: int, timeout_s: float) -> bool:
    """Wait until the worker's consumer groups are Stable (joined, partitions assigned)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(client_id="cityops-bench", **settings.kafka_client_options())
    try:
        deadline = time.monotonic() + timeout_s
        wanted = set(settings.consumer_groups())
        while time.monotonic() < deadline:
            stable = set()
            for g in admin.list_groups():
                info = g if isinstance(g, dict) else {"group_id": g[0], "group_state": "Stable"}
                if info.get("group_state") == "Stable":
                    stable.add(info.get("group_id"))
            if wanted <= stable:
                return True
            time.sleep(0.5)
        return False
    finally:
        admin.close()


class AssignmentClock:
    """A consumer thread on the assignments topic: wall time each case's first dispatch arrived."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        opts = settings.kafka_client_options()
        self.consumer = KafkaConsumer(group_id=None, fetch_max_wait_ms=10, **opts)
        topic = settings.topics.assignments
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.consumer.assign([TopicPartition(topic, p) for p in parts])
        self.consumer.seek_to_beginning()
        self.thread = threading.Thread(target=self._run, name="bench-assignments", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=50).values():
                now = time.time()
                for m in batch:
                    a = orjson.loads(m.value)
                    if a.get("kind", "dispatch") == "dispatch":
                        self.arrived.setdefault(a["case_id"], now)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        self.consumer.close()


def send_paced(producer: Any, topics: Topics, messages: Sequence[SimMessage], rate: float | None,
               opens: dict[tuple[str, bytes, datetime], str], sent: dict[str, float]) -> float:
    """Send at `rate` messages/s (None: as fast as possible); record the send time of case-opening messages.
    Returns the achieved rate."""
    t0 = time.monotonic()
    for k, m in enumerate(messages):
        if rate is not None:
            wait = t0 + k / rate - time.monotonic()
            if wait > 0.0005:
                time.sleep(wait)
        case = opens.get((m.topic, m.key or b"", m.at))
        if case is not None:
            sent.setdefault(case, time.time())
        producer.send(getattr(topics, m.topic), key=m.key, value=m.value)
    producer.flush(timeout=120)
    return len(messages) / max(1e-6, time.monotonic() - t0)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max (linear interpolation between closest ranks, as numpy's default)."""
    if not samples_ms:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def run_latency(base: Settings, inp: BenchInput, tag: str, cfg: BenchConfig) -> dict[str, Any]:
    """A ready worker; the paced part at `cfg.rate`, then the rest at full speed; latency per opened case."""
    from kafka import KafkaProducer

    paced, burst = latency_slice(inp, cfg)
    opens = first_reports(inp.simulation)
    s = isolated(base, tag)
    result: dict[str, Any] = {"rate": cfg.rate, "paced_messages": len(paced), "max_messages": len(burst)}
    with prepared(s), workers(s, 1, inp.registry, cfg.out_dir / "logs", dict(cfg.worker_env)) as procs:
        result["ready"] = wait_for_group(s, 1, cfg.timeout_s)
        time.sleep(2.0)          # the agents start after the assignment; give them a moment, unmeasured
        clock = AssignmentClock(s)
        producer = KafkaProducer(acks="all", linger_ms=1, **s.kafka_client_options())
        sent_paced: dict[str, float] = {}
        sent_max: dict[str, float] = {}
        try:
            result["paced_rate"] = send_paced(producer, s.topics, paced, cfg.rate, opens, sent_paced)
            result["max_offered_rate"] = send_paced(producer, s.topics, burst, None, opens, sent_max)
            want = set(sent_paced) | set(sent_max)
            deadline = time.monotonic() + cfg.timeout_s
            last_n, last_change = -1, time.monotonic()
            while time.monotonic() < deadline and not want <= set(clock.arrived) and procs[0].poll() is None:
                n = len(clock.arrived)
                if n != last_n:
                    last_n, last_change = n, time.monotonic()
                elif time.monotonic() - last_change > 15:
                    break            # nothing new for 15 s: the rest were merged into cases opened earlier
                time.sleep(0.2)
        finally:
            producer.close()
            clock.close()
        result["peak_rss_mib"] = peak_memory_mib(procs[0].pid)
    warm = min(sent_paced.values(), default=0.0) + 2.0     # the first 2 s warm the worker's caches
    for name, sent in (("paced", sent_paced), ("max", sent_max)):
        lat = [(clock.arrived[c] - t) * 1000 for c, t in sent.items() if c in clock.arrived
               and (name == "max" or t >= warm)]
        result[name] = {**percentiles(lat), "cases_sent": len(sent),
                        "cases_seen": sum(1 for c in sent if c in clock.arrived)}
    return result


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
        from pipeline.sink import ClickHouse

        db = ClickHouse(settings, database="default")
        facts["clickhouse"] = str(db.execute("SELECT version()")[0][0])
        db.close()
    except Exception as err:  # the report still has every other fact
        facts["clickhouse"] = f"unknown ({type(err).__name__})"
    return facts


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def render(result: dict[str, Any]) -> str:
    """The tables printed at the end (and easy to paste into an issue)."""
    lines: list[str] = []
    m = result["machine"]
    lines.append(f"cityops bench {result['stamp']}: {m.get('cpu', '?')}, {m['cores']} cores, "
                 f"{m.get('memory_gib', '?')} GiB, load {m['loadavg_start'][0]:.1f} at start; Kafka {m['kafka']}, "
                 f"ClickHouse {m['clickhouse']}, Python {m['python']}")
    inp = result["input"]
    lines.append(f"input: {inp['messages']:,} messages ({', '.join(f'{k} {v:,}' for k, v in inp['topics'].items())}); "
                 f"{inp['expected']['cases']:,} cases, {inp['expected']['located']:,} located items")
    lines.append("")
    lines.append(f"{'stage (in process, same input)':<46}{'unit':>6}{'items':>10}{'per s':>12}{'naive/s':>11}"
                 f"{'ratio':>8}")
    for st in result["stages"]:
        ratio = st["rate"] / st["naive_rate"] if st.get("naive_rate") else None
        lines.append(f"{st['stage'] + ('' if st['clock'] == 'cpu' else ' [wall]'):<46}{st['unit']:>6}"
                     f"{st['items']:>10,}{_num(st['rate']):>12}{_num(st.get('naive_rate')):>11}"
                     f"{_num(ratio, '.1f') + 'x' if ratio else '-':>8}")
    lines.append("")
    lines.append(f"{'end to end (broker + server on this machine)':<46}{'events/s':>10}{'seconds':>9}{'vs naive':>10}"
                 f"{'peak RSS MiB':>14}  done")
    naive = result.get("naive")
    base = naive["events_per_s"] if naive else None
    for run in result["throughput"]:
        ratio = run["events_per_s"] / base if base else None
        mem = "+".join(_num(x) for x in run["peak_rss_mib"])
        done = "yes" if run["finished"] and run.get("complete", True) else f"NO ({run['processed']:,} done)"
        lines.append(f"{run['label']:<46}{_num(run['events_per_s']):>10}{run['seconds']:>9.1f}"
                     f"{(_num(ratio, '.1f') + 'x') if ratio else '-':>10}{mem:>14}  {done}")
    if naive:
        lines.append(f"{'naive baseline (pipeline.naive)':<46}{_num(naive['events_per_s']):>10}"
                     f"{naive['seconds']:>9.1f}{'1.0x':>10}{'(in bench)':>14}  "
                     f"{'yes' if naive['finished'] else 'NO (' + format(naive['messages'], ',') + ' done)'}")
    lat = result.get("latency")
    if lat:
        lines.append("")
        lines.append(f"{'produce -> assignment latency':<46}{'cases':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, label in (("paced", f"offered {lat['paced_rate']:,.0f} events/s"),
                            ("max", f"offered at full speed ({lat['max_offered_rate']:,.0f} events/s)")):
            r = lat[name]
            lines.append(f"{label:<46}{r['n']:>8,}{_num(r['p50_ms']):>10}{_num(r['p99_ms']):>10}"
                         f"{_num(r['max_ms']):>10}")
    nt = result.get("notify")
    if nt:
        lines.append("")
        lines.append(f"{'assignment -> delivery (notifications, P1)':<46}{'sent':>8}{'p50 ms':>10}{'p99 ms':>10}"
                     f"{'max ms':>10}")
        lines.append(f"{'offered ' + format(nt.get('paced_rate', 0), ',.0f') + ' events/s':<46}{nt['n']:>8,}"
                     f"{_num(nt['p50_ms']):>10}{_num(nt['p99_ms']):>10}{_num(nt['max_ms']):>10}")
    if result.get("web"):
        from pipeline.web.bench_phase import report_lines

        lines += report_lines(result["web"])
    lines.append("")
    lines += [f"target: {t['what']}: {t['measured']} -> {'met' if t['met'] else 'NOT met'}" for t in result["targets"]]
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures."""
    out: list[dict[str, Any]] = []
    for one in (run for run in result["throughput"] if run["workers"] == 1):   # each layout of one worker
        layout = "one process" if one.get("stages", ["all"]) == ["all"] else "ingest + cases processes"
        eps = one["events_per_s"]
        out.append({"what": f"one worker ({layout}) >= {TARGET_EVENTS_PER_S:,} events/s end to end",
                    "measured": f"{eps:,.0f} events/s", "met": eps >= TARGET_EVENTS_PER_S})
        if result.get("naive"):
            ratio = eps / result["naive"]["events_per_s"]
            out.append({"what": f"one worker ({layout}) >= {TARGET_RATIO:.0f}x the naive baseline",
                        "measured": f"{ratio:.1f}x", "met": ratio >= TARGET_RATIO})
    sink = result.get("sink")
    if sink:
        from pipeline.sink_bench import TARGET_ROWS_PER_S

        rate = sink["events_columns_http"]
        out.append({"what": f"the sink stores >= {TARGET_ROWS_PER_S:,} rows/s from one process (events rows, "
                            "column builders over HTTP)",
                    "measured": f"{rate:,.0f} rows/s (sensor minutes {sink['readings_columns_http']:,.0f})",
                    "met": rate >= TARGET_ROWS_PER_S})
    lat = result.get("latency")
    if lat:
        p99 = lat["paced"]["p99_ms"]
        out.append({"what": f"p99 produce-to-assignment < {TARGET_P99_MS:.0f} ms at {lat['rate']:,.0f} events/s",
                    "measured": f"{p99:,.0f} ms over {lat['paced']['n']} cases",
                    "met": p99 == p99 and p99 < TARGET_P99_MS})
    nt = result.get("notify")
    if nt:
        from pipeline.notify.bench import TARGET_P99_MS as NOTIFY_P99_MS

        p99 = nt["p99_ms"]
        out.append({"what": f"p99 assignment-to-delivery of priority-1 notifications < {NOTIFY_P99_MS:.0f} ms at "
                            f"{nt['rate']:,.0f} events/s",
                    "measured": f"{p99:,.0f} ms over {nt['n']} deliveries (p50 {nt['p50_ms']:,.0f} ms)",
                    "met": p99 == p99 and p99 < NOTIFY_P99_MS})
    if result.get("web"):
        from pipeline.web.bench_phase import target

        out.append(target(result["web"]))
    month = result.get("month")
    if month:
        mem = max(month["peak_rss_mib"])
        sensors = f", {month['sensors']:,} sensors" if "sensors" in month else ""
        messages = f"{month['messages']:,} messages, " if "messages" in month else ""
        out.append({"what": f"worker memory < {TARGET_MEMORY_MIB:.0f} MiB with a month of state "
                            f"({month['days']:g} of the target's 30 simulated days{sensors})",
                    "measured": f"{mem:,.0f} MiB peak after {month['days']:g} days: {messages}"
                                f"{month['stored']['cases']:,} cases{sensors}"
                                + ("" if month.get("finished", True) else " (cut by the timeout)"),
                    "met": mem == mem and mem < TARGET_MEMORY_MIB and month.get("finished", True)})
    return out


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
    from pipeline.topics import delete_topics

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
        from pipeline.sink_bench import run_sink_bench

        log(f"  the sink alone (pipeline.sink_bench, {SINK_ROWS:,} rows in batches of {SINK_BATCH:,})...")
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
        from pipeline.notify.bench import run_phase

        log(f"  notification latency (worker + notifier) at {cfg.rate:,.0f} events/s for {cfg.latency_seconds:g} s...")
        result["notify"] = run_phase(base, inp, tag + "nt", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if "web" in phases:                      # the web under a district's load (pipeline.web.bench_phase)
        from pipeline.web import bench_phase

        result["web"] = bench_phase.run_phase(base, inp, tag + "web", cfg)
        write_result(result, cfg.out_dir)    # a cut run keeps the phases it finished
    if cfg.month_days > 0 and "month" in phases:
        log(f"  a worker with {cfg.month_days:g} simulated days of state, {cfg.month_sensors:,} sensors...")
        month = build_input(month_config(cfg.month_days, cfg.month_sensors, cfg.seed), world, cfg.out_dir,
                            tag + "-month")
        log(f"  {len(month.messages):,} messages")
        # a month is many times a day's input: the phase's time limit grows with it (at 5,000 messages/s)
        run = run_throughput(base, month, 1, tag + "mo",
                             replace(cfg, timeout_s=max(cfg.timeout_s, len(month.messages) / 5000)))
        result["month"] = {"days": cfg.month_days, "sensors": cfg.month_sensors, **run}
    result["targets"] = targets(result)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["wall_s"] = time.monotonic() - t0
    return result


def _jsonable(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Write (or overwrite) var/bench/<stamp>.json, with the targets as far as the run got."""
    if "input" in result:
        result["targets"] = targets(result)
    path = out_dir / f"{result['stamp']}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                                  default=str))
    return path


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
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
