"""Failures of the cluster (issue #18): a broker SIGKILLed, a ClickHouse replica killed and restarted, ZooKeeper
stopped, a worker killed and another added, each in the middle of a simulated stream; afterwards every input is
accounted for exactly once (the chaos harness's accounting, tests/chaos/harness.py) and both replicas of each shard
hold the same rows.

Each test sends the first half of a small simulated day, waits until the workers are storing it, breaks something,
sends the second half (so the workers have work while it is broken), repairs it, and waits until the consumer groups
have committed everything. The databases are migrated ON CLUSTER in parallel once for the module (a migration takes
half a minute on 18.16). README "Running a city: the cluster", the failure table, says which mechanism each test
covers and how it was checked to fail without it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from pipeline.config import Settings, Topics
from pipeline.runtime.topics import ensure_topics
from pipeline.sink.migrate import migrate
from pipeline.sink.transport import ClickHouse, QueryError
from tests.chaos.harness import (
    ChaosPipeline,
    Expected,
    all_problems,
    messages_of,
    produce_stream,
    progress_reached,
    stream,
    wait_drained,
)
from tests.cluster.conftest import cluster_sh, drop_database
from tests.support import wait_for

pytestmark = [pytest.mark.cluster]
STREAM = (60, 300, 11)         # sensors, hotline tickets, seed: ~7,500 messages, 556 located reports


def nodes() -> list[list[str]]:
    """var/cluster/nodes.txt, as cluster.sh wrote it: kind, then name/id, ports and directory."""
    path = Settings.from_env().var_dir / "cluster" / "nodes.txt"
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def pid_of(kind: str, name: str) -> int:
    row = next(r for r in nodes() if r[0] == kind and (kind == "zookeeper" or r[1] == name))
    return int((Path(row[-1]) / "pid").read_text().strip())


def kill(kind: str, name: str = "") -> None:
    """SIGKILL one process of the profile: no shutdown, no flush."""
    pid = pid_of(kind, name)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 30), f"{kind} {name} still alive"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def restart() -> None:
    """`cluster.sh up`: starts what is not running and waits until every node answers."""
    up = cluster_sh("up", check=False)
    assert up.returncode == 0, up.stderr[-3000:]


def node_ports() -> list[int]:
    return [int(r[2]) for r in nodes() if r[0] == "clickhouse"]


@pytest.fixture(scope="module")
def databases(cluster_env: dict[str, str]) -> Iterator[list[str]]:
    """Five databases migrated ON CLUSTER at once; each test takes one (its accounting reads whole tables)."""
    base = Settings.from_env({**os.environ, **cluster_env})
    names = [f"cityops_f{uuid.uuid4().hex[:10]}" for _ in range(5)]
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda db: migrate(replace(base, clickhouse_database=db), cluster="cityops"), names))
    left = list(names)
    yield left
    drop_database(base, *names)


FAILED_AT: dict[str, float] = {}


@contextmanager
def broken(kind: str, name: str = "") -> Iterator[None]:
    """`kind` `name` SIGKILLed for the block; restarted afterwards, also when the block fails (the next tests and
    modules need the whole profile)."""
    kill(kind, name)
    FAILED_AT[kind] = time.monotonic()
    try:
        yield
    finally:
        restart()
        print(f"\n{kind} {name}: restarted {time.monotonic() - FAILED_AT[kind]:.0f} s after the kill")


@contextmanager
def on_cluster(tmp: Path, cluster_env: dict[str, str], database: str, name: str,
               **env: str) -> Iterator[ChaosPipeline]:
    tag = f"{name}{uuid.uuid4().hex[:8]}"
    base = Settings.from_env({**os.environ, **cluster_env})
    s = replace(base, clickhouse_database=database, topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp)
    ensure_topics(s)
    registry = tmp / "sensors.csv"
    stream(*STREAM).write_registry(registry)
    defaults = {"CITYOPS_SENSORS": str(registry), "CITYOPS_SLA_CHECK_INTERVAL": "86400", **cluster_env}
    p = ChaosPipeline(settings=s, dir=tmp, env={**defaults, **env})
    try:
        yield p
    finally:
        p.stop_all()


def _sync_replica(ch: ClickHouse, table: str, within_s: float = 120.0) -> None:
    """SYSTEM SYNC REPLICA, waiting while the replica is still read-only or without its ZooKeeper session (for a
    while after ZooKeeper is back, each replica's restarting thread has not reconnected yet)."""
    give_up = time.monotonic() + within_s
    while True:
        try:
            ch.execute(f"SYSTEM SYNC REPLICA {table}")
            return
        except QueryError as err:
            if time.monotonic() > give_up or getattr(err.__cause__, "code", None) not in (164, 225, 242, 999):
                raise
            time.sleep(2.0)


def replicas_differ(s: Settings) -> list[str]:
    """Per replicated table, shards whose two replicas hold different contents (after SYNC REPLICA on each).

    Contents as a query sees them, not parts: a replica may hold the same rows twice for up to 5 minutes. When
    ZooKeeper is lost while a part is being committed, 18.16 keeps the part locally and answers 319 ("unknown
    status, client must retry"); the sink's retry stores the block again through ZooKeeper, and the local copy is
    detached by the replica's part check only once it is 5 minutes old. Every table is built for that
    (ReplacingMergeTree, uniqExact states), so rows are compared after FINAL and DISTINCT, and aggregate states
    merged per key."""
    db = s.clickhouse_database
    ports = node_ports()
    problems = []
    sums: dict[tuple[str, int], tuple[int, int]] = {}
    for i, port in enumerate(ports):
        ch = ClickHouse(replace(s, clickhouse_port=port), database="default")
        try:
            tables = [r[0] for r in ch.execute("SELECT name FROM system.tables WHERE database = %(d)s "
                                               "AND engine LIKE 'Replicated%%'", {"d": db})]
            for t in tables:
                _sync_replica(ch, f"{db}.{t}")
                cols = ch.execute("SELECT name, type FROM system.columns WHERE database = %(d)s "
                                  "AND table = %(t)s", {"d": db, "t": t})
                n, h = ch.execute(_contents_digest(f"{db}.{t}", [(c, ty) for c, ty in cols]))[0]
                sums[(t, i)] = (int(n), int(h or 0))
        finally:
            ch.close()
    for (t, i), got in sums.items():
        if i % 2 == 0 and sums.get((t, i + 1)) != got:
            problems.append(f"{t}: shard {i // 2 + 1} replicas hold {got} and {sums.get((t, i + 1))} "
                            "(distinct rows, hash)")
    return problems


def _contents_digest(table: str, columns: list[tuple[str, str]]) -> str:
    """A query giving (distinct rows, their hash sum) of a table as queries see it: aggregate states merged per key,
    other tables' rows after FINAL."""
    states = [(c, ty[len("AggregateFunction("):].split(",")[0].strip()) for c, ty in columns
              if ty.startswith("AggregateFunction(")]
    if states:
        keys = [c for c, ty in columns if not ty.startswith("AggregateFunction(")]
        values = [f"toString({c})" for c in keys] + [f"toString({f}Merge({c}))" for c, f in states]
        rows = f"SELECT cityHash64({', '.join(values)}) AS h FROM {table} GROUP BY {', '.join(keys)}"
    else:
        values = [f"toString({c})" for c, _ in columns]
        rows = f"SELECT DISTINCT cityHash64({', '.join(values)}) AS h FROM {table} FINAL"
    return f"SELECT count(), sum(h) FROM ({rows})"


def first_half_then_break(p: ChaosPipeline, workers: int) -> tuple[Expected, list[tuple[str, bytes | None, bytes]]]:
    sim = stream(*STREAM)
    expected = Expected.of(sim)
    messages = messages_of(sim)
    produce_stream(p.settings, messages[:len(messages) // 2])
    for n in range(workers):
        p.start_worker(n)
    progress_reached(p, sum(expected.readings.values()) // 5, timeout_s=300)
    return expected, messages[len(messages) // 2:]


def finish(p: ChaosPipeline, expected: Expected, alive: list[subprocess.Popen[bytes]], since: float) -> None:
    """Drained, then accounted for; prints (does not assert) how long after the failure the backlog was drained."""
    wait_drained(p, timeout_s=300, alive=alive)
    print(f"\n{p.settings.topic_prefix}: every input committed {time.monotonic() - since:.0f} s after the failure")
    # replicas converge, they are not in step: after ZooKeeper is back a replica pulls the shard's log some
    # seconds later (SYNC REPLICA returns at once while its queue is still empty); 2 minutes to agree. A
    # replica's own copy of a part whose commit ZooKeeper lost stays 5 minutes: see replicas_differ
    agree_by = time.monotonic() + 120
    while (differ := replicas_differ(p.settings)) and time.monotonic() < agree_by:
        time.sleep(3)
    problems = differ + all_problems(p, expected)
    assert not problems, "\n".join(problems) + "\n" + p.logs()[-3000:]
    assert "Traceback" not in p.logs(), p.logs()[-4000:]


def leader_counts(p: ChaosPipeline) -> dict[int, int]:
    admin = KafkaAdminClient(**p.settings.kafka_client_options())
    try:
        counts: dict[int, int] = {}
        for t in admin.describe_topics(p.settings.topics.all()):
            for part in t["partitions"]:
                counts[part["leader_id"]] = counts.get(part["leader_id"], 0) + 1
        return counts
    finally:
        admin.close()


def test_the_broker_leading_most_partitions_killed_mid_stream(tmp_path: Path, cluster_env: dict[str, str],
                                                              databases: list[str]) -> None:
    """SIGKILL of the broker that leads most cityops partitions while two workers run; the stream is drained with
    that broker still down (3 copies, min ISR 2: the other two take over), then it is restarted."""
    with on_cluster(tmp_path, cluster_env, databases.pop(), "brk") as p:
        expected, rest = first_half_then_break(p, workers=2)
        counts = leader_counts(p)
        victim = max(counts, key=lambda b: counts[b])
        failed = time.monotonic()
        with broken("kafka", str(victim)):
            produce_stream(p.settings, rest)
            wait_drained(p, timeout_s=300, alive=p.workers)
        finish(p, expected, alive=p.workers, since=failed)


def test_a_clickhouse_replica_killed_mid_stream_catches_up(tmp_path: Path, cluster_env: dict[str, str],
                                                           databases: list[str]) -> None:
    """SIGKILL of the second replica of shard 2 while the worker writes with insert_quorum=2: the sink retries
    until the replica is back; the restarted replica then holds the same rows as the other one."""
    with on_cluster(tmp_path, cluster_env, databases.pop(), "rep", CITYOPS_INSERT_QUORUM="2") as p:
        expected, rest = first_half_then_break(p, workers=1)
        failed = time.monotonic()
        with broken("clickhouse", "s2r2"):
            produce_stream(p.settings, rest)
            assert wait_for(lambda: "failed" in p.logs(), 120), p.logs()[-3000:]   # the sink waits for the quorum
        finish(p, expected, alive=p.workers, since=failed)


def rows_on(s: Settings, port: int, table: str) -> int:
    """Rows of `table`'s local (Replicated) table on one node, duplicates not yet merged included."""
    ch = ClickHouse(replace(s, clickhouse_port=port), database="default")
    try:
        return int(ch.execute(f"SELECT count() FROM {s.clickhouse_database}.{table}_local")[0][0])
    finally:
        ch.close()


def test_the_clickhouse_node_the_sink_writes_through_killed_mid_stream(tmp_path: Path, cluster_env: dict[str, str],
                                                                       databases: list[str]) -> None:
    """SIGKILL of s1r1, the first of CITYOPS_CLICKHOUSE_NODES, the node the worker's sink writes through: the sink
    moves to the next node (s1r2) and storing goes on: shard 1's rows grow on s1r2 while s1r1 is down (they can only
    get there through a live node: s1r1 is the only one it could fetch from otherwise). s1r1 is restarted 20 s after
    the kill at the earliest, and catches up from s1r2. A reader opened with `any_node` answers meanwhile. With a
    one-node list (CITYOPS_CLICKHOUSE_NODES empty) the sink waits for s1r1 and nothing grows."""
    with on_cluster(tmp_path, cluster_env, databases.pop(), "snk") as p:
        expected, rest = first_half_then_break(p, workers=1)
        s1r2 = node_ports()[1]
        failed = time.monotonic()
        with broken("clickhouse", "s1r1"):
            before = rows_on(p.settings, s1r2, "sensor_readings")
            produce_stream(p.settings, rest)
            grew = wait_for(lambda: rows_on(p.settings, s1r2, "sensor_readings") > before, 120, every_s=0.5)
            print(f"\nsink: shard 1's readings on s1r2 {'grew' if grew else 'still the same'} "
                  f"{time.monotonic() - failed:.0f} s after s1r1 was killed")
            reader = ClickHouse(p.settings, any_node=True)     # a reader (web UI, reports) goes to another node
            try:
                assert reader.execute("SELECT count() FROM sensor_readings")[0][0] > 0
            finally:
                reader.close()
            time.sleep(max(0.0, 20.0 - (time.monotonic() - failed)))
        assert grew, "nothing stored while the sink's node was down:\n" + p.logs()[-3000:]
        assert "unreachable" in p.logs() and "writing through 127.0.0.1:" in p.logs(), p.logs()[-3000:]
        finish(p, expected, alive=p.workers, since=failed)


def test_zookeeper_stopped_for_twenty_seconds_mid_stream(tmp_path: Path, cluster_env: dict[str, str],
                                                         databases: list[str]) -> None:
    """ZooKeeper killed: the replicated tables turn read-only, the sink backs off and retries; 20 s later it is
    restarted and every row is stored once."""
    with on_cluster(tmp_path, cluster_env, databases.pop(), "zk") as p:
        expected, rest = first_half_then_break(p, workers=1)
        failed = time.monotonic()
        with broken("zookeeper"):
            produce_stream(p.settings, rest)
            time.sleep(20)
        finish(p, expected, alive=p.workers, since=failed)


def test_a_worker_killed_and_another_added_mid_stream(tmp_path: Path, cluster_env: dict[str, str],
                                                      databases: list[str]) -> None:
    """Two workers share the stream; one is SIGKILLed and a third joins: the groups rebalance, and the killed
    worker's open transaction is aborted, not committed twice."""
    with on_cluster(tmp_path, cluster_env, databases.pop(), "wrk") as p:
        expected, rest = first_half_then_break(p, workers=2)
        failed = time.monotonic()
        p.kill(p.workers[0])
        third = p.start_worker(2)
        produce_stream(p.settings, rest)
        finish(p, expected, alive=[p.workers[1], third], since=failed)
