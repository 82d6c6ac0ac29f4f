"""What every chaos test needs: an isolated pipeline on the real broker and server, a simulated stream, a way
to wait until the worker has drained it, and the exactly-once accounting of every input message.

The accounting compares what the worker stored and sent with answers computed without the worker:

- located reports: the event ids of the simulation's ground truth (`cases[*].reports` of truth format 2: the
  problems' reports and the device-fault reports) must be the event ids in `events`, each once
  (`count() FINAL == uniqExact(event_id) == len(truth ids)`); a device fault the truth is not `certain` of (a
  silence near the end) may be there or not;
- sensor readings: per sensor, `sum(readings) FROM sensor_readings FINAL` must equal the number of readings the
  simulated network produced for it (the simulator sends each sensor's readings in time order, so none is late);
- malformed input: one dead letter per malformed message, counted by distinct (source_topic, partition, offset),
  every one with a reason;
- unlocated tickets: the truth's unlocated ticket ids, each on the unlocated topic;
- assignments: at most one assignment id per (case, kind, dispatch number); a re-sent assignment has the same id;
- case states: the located topic is the exact, ordered input of the cases stage, so replaying it through an
  in-process `CaseStage` (fresh books, the same rules) gives the states a worker that never failed would
  have reached; every case in ClickHouse must match it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from pipeline.config import ROOT, Settings, Topics
from pipeline.simulate import SimConfig, Simulation, simulate
from tests.support import wait_for

CTL = {"kafka": ["bash", str(ROOT / "deploy/local/kafka.sh")],
       "clickhouse": ["bash", str(ROOT / "deploy/local/clickhouse.sh")]}
INPUTS = ("raw_hotline", "raw_patrol", "raw_iot", "case_updates")


# -- the stream -----------------------------------------------------------------------------------------

def stream_config(sensors: int, hotline_per_day: int, seed: int) -> SimConfig:
    """A simulated Hongkou day ending two days ago (every time passes the worker's time check), 2 % malformed."""
    start = (datetime.now(UTC) - timedelta(days=3)).replace(hour=16, minute=0, second=0, microsecond=0)
    return SimConfig(days=1.0, start=start, sensors=sensors, hotline_per_day={"310109": hotline_per_day},
                     multi_source_per_day=8, patrol_reports_per_shift=6, seed=seed, malformed_share=0.02,
                     sensor_incidents_per_1000=15.0)


@lru_cache(maxsize=4)
def stream(sensors: int, hotline_per_day: int, seed: int) -> Simulation:
    """The simulation (cached per test process: generating the largest takes ~10 s)."""
    return simulate(stream_config(sensors, hotline_per_day, seed))


@dataclass(frozen=True)
class Expected:
    """What the worker must end with, computed from the simulation alone."""

    event_ids: frozenset[str]
    maybe_event_ids: frozenset[str]    # device faults the worker's clock may or may not reach
    readings: dict[str, int]
    malformed: dict[str, int]          # topic field name -> count
    unlocated: frozenset[str]
    total: int

    @classmethod
    def of(cls, sim: Simulation) -> Expected:
        truth = sim.truth.to_json()
        events = frozenset(r["event_id"] for c in truth["cases"] if c["certain"] for r in c["reports"])
        maybe = frozenset(r["event_id"] for c in truth["cases"] if not c["certain"] for r in c["reports"])
        readings = Counter(key.decode() for _, key, _ in sim.network.readings())
        by_name = {getattr(Topics(), f): f for f in INPUTS}
        malformed = {by_name[t]: n for t, n in truth["counts"]["malformed"].items()}
        unlocated = frozenset(f"hotline:{u['ticket']}" for u in truth["unlocated"])
        return cls(events, maybe, dict(readings), malformed, unlocated, len(sim))


def messages_of(sim: Simulation) -> list[tuple[str, bytes | None, bytes]]:
    return [(m.topic, m.key, m.value) for m in sim.messages()]


# -- an isolated pipeline -------------------------------------------------------------------------------

@dataclass
class ChaosPipeline:
    """Own topics (prefix), ClickHouse database and consumer group; one or more worker processes."""

    settings: Settings
    dir: Path
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.settings.consumer_groups()   # ingest (raw topics) and cases (located), in every layout

    def log(self, n: int = 0) -> Path:
        return self.dir / f"worker{n}.log"

    def start_worker(self, n: int = 0, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings.to_env(), **self.env, **(extra_env or {})}
        with self.log(n).open("ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "warn"],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """`kill -9`: no shutdown, no commit, no flush."""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def stop_all_but(self, keep: subprocess.Popen[bytes]) -> None:
        """SIGTERM (a clean leave: the group rebalances) to every worker except `keep`."""
        for proc in self.workers:
            if proc is not keep and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)

    def tail(self, n: int = 0, chars: int = 4000) -> str:
        path = self.log(n)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("worker*.log")))


@dataclass
class Isolated:
    pipeline: ChaosPipeline

    def __enter__(self) -> ChaosPipeline:
        return self.pipeline

    def __exit__(self, *exc: object) -> None:
        self.pipeline.stop_all()
        try:
            from pipeline.sink.transport import ClickHouse

            db = ClickHouse(self.pipeline.settings)
            db.execute(f"DROP DATABASE IF EXISTS {self.pipeline.settings.clickhouse_database}")
            db.close()
        except Exception:  # a test that failed with the server down: nothing to drop
            pass


def isolated(tmp: Path, sim: Simulation, name: str, **env: str) -> Isolated:
    """A fresh pipeline for `sim`: topics created, schema migrated, the sensor registry written."""
    from pipeline.runtime.topics import ensure_topics
    from pipeline.sink.migrate import migrate

    tag = f"{name}{uuid.uuid4().hex[:8]}"
    base = Settings.from_env()
    s = replace(base, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp)
    ensure_topics(s)
    # other tests of the suite stop the shared server for a while: wait for it rather than fail
    assert wait_for(lambda: _migrated(s, migrate), 240, every_s=2.0), "ClickHouse did not come back"
    registry = tmp / "sensors.csv"
    sim.write_registry(registry)
    # the SLA timer escalates by the latest time of *all* grids; the reference replay escalates per grid only
    defaults = {"CITYOPS_SENSORS": str(registry), "CITYOPS_SLA_CHECK_INTERVAL": "86400"}
    return Isolated(ChaosPipeline(settings=s, dir=tmp, env={**defaults, **env}))


def _migrated(settings: Settings, migrate: Any) -> bool:
    from pipeline.sink.transport import QueryError

    try:
        migrate(settings)
    except QueryError:
        return False
    return True


def produce_stream(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Every message to its (prefixed) topic, acknowledged by the broker (acks=all). Retries for a minute: just
    after a broker restart its partitions have no leader until it has loaded them (longer with many topics)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024, retries=120, retry_backoff_ms=500,
                             max_request_size=2 * 1024 * 1024, **settings.kafka_client_options())
    failures: list[BaseException] = []
    try:
        for topic, key, value in messages:
            producer.send(getattr(settings.topics, topic), key=key, value=value).add_errback(failures.append)
        producer.flush(timeout=180)
    finally:
        producer.close(timeout=30)
    assert not failures, failures[:3]


# -- progress and drain ---------------------------------------------------------------------------------

def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        return dict(consumer.end_offsets(parts))
    finally:
        consumer.close()


def lag(settings: Settings, groups: dict[str, list[str]]) -> int:
    """Messages of each group's topics it has not committed yet (a partition never committed counts whole)."""
    admin = KafkaAdminClient(**settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        from pipeline.web.feed import _group_offsets  # kafka-python 2 and 3 name the call differently

        committed = {group: _group_offsets(admin, group) for group in groups}
    finally:
        admin.close()
    total = 0
    for group, topics in groups.items():
        ends = end_offsets(settings, topics)
        offsets = committed[group]
        total += sum(max(0, end - max(0, offsets[tp].offset if tp in offsets else 0)) for tp, end in ends.items())
    return total


def query(p: ChaosPipeline, sql: str, timeout_s: float = 180.0) -> list[tuple[Any, ...]]:
    """Run `sql`, waiting out a ClickHouse that is down (other tests of the suite restart the shared server)."""
    from pipeline.sink.transport import ClickHouse, QueryError

    deadline = time.monotonic() + timeout_s
    while True:
        db = ClickHouse(p.settings)
        try:
            return db.execute(sql)
        except QueryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
        finally:
            db.close()


def stored_readings(p: ChaosPipeline) -> int:
    """Readings stored so far (a lower bound while the stream is running)."""
    return int(query(p, "SELECT sum(readings) FROM sensor_readings FINAL")[0][0] or 0)


def group_members(p: ChaosPipeline) -> dict[str, int]:
    """Members of each consumer group of the pipeline (`describe_groups` in kafka-python 3, else 2.x's call)."""
    groups = list(p.settings.consumer_groups())
    admin = KafkaAdminClient(client_id="cityops-chaos", **p.settings.kafka_client_options())
    try:
        if hasattr(admin, "describe_groups"):
            return {g: len(info.get("members") or []) for g, info in admin.describe_groups(groups).items()}
        return {info.group: len(info.members) for info in admin.describe_consumer_groups(groups)}
    finally:
        admin.close()


def wait_drained(p: ChaosPipeline, timeout_s: float, alive: list[subprocess.Popen[bytes]] | None = None,
                 stall_s: float = 180.0) -> None:
    """Until the group has committed every input and internal message twice in a row, 3 s apart.

    Fails when the lag has not gone down for `stall_s` seconds (a stuck worker), or after `timeout_s` seconds
    of progress that is still not done. The shared CI machines run at very different speeds, so a worker that
    keeps draining is given up to twice `timeout_s`, never more.
    """
    started = time.monotonic()
    last_progress = started
    best: int | None = None
    quiet = 0
    left = -1
    while True:
        now = time.monotonic()
        if now - last_progress > stall_s or now - started > 2 * timeout_s or (
                now - started > timeout_s and now - last_progress > 30.0):
            break
        for proc in alive or []:
            assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{p.logs()[-4000:]}"
        try:
            left = lag(p.settings, p.groups)
        except Exception:  # the broker may be restarting in the test that restarts it
            left = -1
        if left >= 0 and (best is None or left < best):
            best, last_progress = left, time.monotonic()
        quiet = quiet + 1 if left == 0 else 0
        if quiet >= 2:
            return
        time.sleep(3.0)
    raise AssertionError(f"not drained after {time.monotonic() - started:.0f}s (lag {left}, lowest {best}, "
                         f"no progress for {time.monotonic() - last_progress:.0f}s):\n{p.logs()[-4000:]}")


# -- reading the outputs --------------------------------------------------------------------------------

def read_topic(settings: Settings, topic: str) -> dict[int, list[Any]]:
    """Every message of `topic`, per partition, in offset order (the consumer stops at the end offsets)."""
    ends = end_offsets(settings, [topic])
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_client_options())  # type: ignore[arg-type]
    out: dict[int, list[Any]] = defaultdict(list)
    try:
        live = [tp for tp, end in ends.items() if end > 0]
        if not live:                     # nothing was ever written to the topic
            return out
        consumer.assign(live)
        consumer.seek_to_beginning(*live)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=5000).items():
                for m in batch:
                    if m.offset < ends[tp]:
                        out[tp.partition].append(m)
                if consumer.position(tp) >= ends[tp]:
                    remaining.pop(tp, None)
        assert not remaining, f"could not read {topic} to its end: {remaining}"
    finally:
        consumer.close()
    return dict(out)


def json_messages(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for part in read_topic(settings, topic).values() for m in part]


@dataclass
class Outputs:
    events: list[tuple[str, str]]               # (event_id, case_id), every stored copy (before FINAL)
    events_final: int
    readings: dict[str, int]
    deadletters: list[dict[str, Any]]
    unlocated: list[dict[str, Any]]
    assignments: list[dict[str, Any]]
    cases: dict[str, dict[str, Any]]
    transitions: dict[str, list[dict[str, Any]]]

    @classmethod
    def read(cls, p: ChaosPipeline) -> Outputs:
        from pipeline.sink.transport import ClickHouse

        s = p.settings
        query(p, "SELECT 1")                      # wait for the server if it is down
        db = ClickHouse(s)
        try:
            events = [(r[0], r[1]) for r in db.execute("SELECT event_id, case_id FROM events")]
            final = int(db.execute("SELECT count() FROM events FINAL")[0][0])
            readings = {r[0]: int(r[1]) for r in db.execute(
                "SELECT sensor_id, sum(readings) FROM sensor_readings FINAL GROUP BY sensor_id")}
            cases = {r["case_id"]: r for r in db.query_dicts("SELECT * FROM cases FINAL")}
            transitions: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in db.query_dicts("SELECT * FROM case_transitions FINAL ORDER BY case_id, seq"):
                transitions[r["case_id"]].append(r)
        finally:
            db.close()
        return cls(events=events, events_final=final, readings=readings,
                   deadletters=json_messages(s, s.topics.deadletter),
                   unlocated=json_messages(s, s.topics.unlocated),
                   assignments=json_messages(s, s.topics.assignments), cases=cases, transitions=dict(transitions))


# -- the accounting -------------------------------------------------------------------------------------

def accounting_problems(p: ChaosPipeline, expected: Expected, out: Outputs) -> list[str]:
    """Every way the outputs break "each input accounted for exactly once"; empty when they do not."""
    problems: list[str] = []
    t = p.settings.topics
    stored = {e for e, _ in out.events}
    if stored - expected.maybe_event_ids != expected.event_ids:
        missing, extra = expected.event_ids - stored, stored - expected.event_ids - expected.maybe_event_ids
        problems.append(f"events: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})")
    if out.events_final != len(stored):
        problems.append(f"events: {out.events_final} rows FINAL for {len(stored)} distinct ids")
    case_of = defaultdict(set)
    for e, c in out.events:
        case_of[e].add(c)
    split = {e: cs for e, cs in case_of.items() if len(cs) > 1}
    if split:
        problems.append(f"events: {len(split)} events stored under two cases, e.g. {next(iter(split.items()))}")
    wrong = {s: (out.readings.get(s, 0), n) for s, n in expected.readings.items() if out.readings.get(s, 0) != n}
    wrong |= {s: (n, 0) for s, n in out.readings.items() if s not in expected.readings}
    if wrong:
        problems.append(f"sensor_readings: {len(wrong)} sensors with (stored, produced) counts off, e.g. "
                        f"{sorted(wrong.items())[:3]}; stored {sum(out.readings.values())} of "
                        f"{sum(expected.readings.values())}")
    by_topic: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for d in out.deadletters:
        if not str(d.get("reason", "")).strip():
            problems.append(f"dead letter without a reason: {d}")
        if d["partition"] >= 0:
            by_topic[d["source_topic"]].add((d["partition"], d["offset"]))
    for name, n in expected.malformed.items():
        got = len(by_topic.get(getattr(t, name), ()))
        if got != n:
            problems.append(f"dead letters from {name}: {got} distinct offsets, {n} malformed messages sent")
    unlocated = {u["event_id"] for u in out.unlocated}
    if unlocated != expected.unlocated:
        problems.append(f"unlocated: {len(expected.unlocated - unlocated)} missing, "
                        f"{len(unlocated - expected.unlocated)} unexpected")
    content: dict[str, set[bytes]] = defaultdict(set)
    for a in out.assignments:
        content[a["assignment_id"]].add(orjson.dumps(a, option=orjson.OPT_SORT_KEYS))
    per_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in out.assignments:
        per_case[a["case_id"]].append(a)
    changed = [i for i, c in content.items() if len(c) > 1]
    if changed:
        problems.append(f"assignments: {len(changed)} ids sent twice with different content, e.g. {changed[:2]}")
    stored_dispatches = {c: sum(1 for x in tr if x["status"] in ("dispatched", "escalated"))
                         for c, tr in out.transitions.items()}
    sent = {c: len({a["assignment_id"] for a in items}) for c, items in per_case.items()}
    off = {c: (sent.get(c, 0), n) for c, n in stored_dispatches.items() if sent.get(c, 0) != n}
    if off:
        problems.append(f"assignments: {len(off)} cases whose distinct assignment ids differ from their dispatches "
                        f"and escalations, e.g. {sorted(off.items())[:3]}")
    for case_id, tr in out.transitions.items():
        seqs = [x["seq"] for x in tr]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"case_transitions of {case_id}: seq {seqs[:12]} is not 1..n")
            break
    return problems


def reference_states(p: ChaosPipeline) -> dict[str, dict[str, Any]]:
    """The state of every case after the located topic, in its own order, went through a fresh CaseStage."""
    from pipeline.model.cases import CorrelationPolicy
    from pipeline.stages.cases import CaseBook
    from pipeline.stages.casestage import CaseStage
    from rules.engine import DEFAULT_RULES, RulesHolder

    stage = CaseStage(RulesHolder(Path(p.env.get("CITYOPS_RULES", str(DEFAULT_RULES)))).current,
                      CorrelationPolicy())
    states: dict[str, dict[str, Any]] = {}
    for _, messages in sorted(read_topic(p.settings, p.settings.topics.located).items()):
        books: dict[str, CaseBook] = {}
        items = in_marks_order(p.settings, messages)
        for i in range(0, len(items), 2000):       # the worker's batch size: escalations happen per batch
            states.update(stage.apply(items[i:i + 2000], books).states)
    return states


def in_marks_order(settings: Any, messages: list[Any]) -> list[tuple[str, Any]]:
    """A located partition's items in the order the cases stage applies them (pipeline.stages.order): behind the
    ingest's progress marks (every input topic with `settings.partitions` partitions), or as they come with
    `order_by_marks` off."""
    from pipeline.stages.order import Held, Reorder
    from pipeline.wire import MARKS_KEY, decode_located, decode_marks, located_time

    if not settings.order_by_marks:
        return [(m.key.decode(), m.value) for m in messages if m.key != MARKS_KEY]
    order = Reorder(frozenset((t, i) for t in settings.topics.sources() for i in range(settings.partitions)))
    out: list[tuple[str, Any]] = []
    for m in messages:
        if m.key == MARKS_KEY:
            released = order.mark(decode_marks(m.value))
        else:
            item = decode_located(m.value)
            released = order.add(Held(located_time(item), m.value, m.key.decode(), item, m.offset))
        out += [(h.key, h.item) for h in released]
    assert not order.held, f"{len(order.held)} located items never released: a partition never marked"
    return out


STATE_FIELDS = ("status", "team", "reports", "reopened", "category", "cell", "discovered_by")


def state_problems(reference: dict[str, dict[str, Any]], out: Outputs) -> list[str]:
    """Cases whose stored state differs from the reference replay (escalation flags and revisions aside: the
    worker's batches are cut where its polls happened to end)."""
    problems: list[str] = []
    if set(reference) != set(out.cases):
        problems.append(f"cases: {len(set(reference) - set(out.cases))} missing in ClickHouse, "
                        f"{len(set(out.cases) - set(reference))} not in the reference")
    diffs = []
    for cid in set(reference) & set(out.cases):
        want, got = reference[cid], out.cases[cid]
        bad = {f: (got[f], want[f]) for f in STATE_FIELDS if got[f] != want[f]}
        if (got["closed_at"] is None) != (want["closed_at"] is None):
            bad["closed_at"] = (got["closed_at"], want["closed_at"])
        if sorted(got["sources"]) != sorted(want["sources"]):
            bad["sources"] = (got["sources"], want["sources"])
        if bad:
            diffs.append((cid, bad))
    if diffs:
        problems.append(f"cases: {len(diffs)} states differ from the reference, e.g. {diffs[:3]}")
    return problems


def all_problems(p: ChaosPipeline, expected: Expected) -> list[str]:
    out = Outputs.read(p)
    return accounting_problems(p, expected, out) + state_problems(reference_states(p), out)


# -- the services ---------------------------------------------------------------------------------------

def service(name: str, action: str) -> None:
    """Start or stop the shared local Kafka or ClickHouse (deploy/local)."""
    done = subprocess.run([*CTL[name], action], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{name} {action}: {done.stderr[-2000:]}"


def progress_reached(p: ChaosPipeline, readings: int, timeout_s: float) -> None:
    """Wait until at least `readings` sensor readings are stored: the stream is well under way."""
    assert wait_for(lambda: stored_readings(p) >= readings, timeout_s, every_s=0.5), p.logs()[-4000:]


def iterate(seq: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]
