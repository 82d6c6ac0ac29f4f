"""The local cluster profile (deploy/local/cluster.sh, README "Running a city: the cluster"), live: three KRaft
brokers, ZooKeeper and ClickHouse 2 shards x 2 replicas, started by tests/cluster/conftest.py (once per session); the
last test checks that `down` leaves nothing running (the module sorts after test_failover)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from pipeline import deploy
from pipeline.config import ROOT, Settings, Topics
from pipeline.runtime.topics import ensure_derived, ensure_topics, replication, under_replicated, wait_visible
from pipeline.sink.migrate import migrate, status
from pipeline.sink.transport import ClickHouse
from tests.cluster.conftest import cluster_sh, drop_database
from tests.pipeline.factories import hotline, raw
from tests.support import produce, running_worker, wait_for

pytestmark = [pytest.mark.cluster]
SITE = deploy.load("local", int(os.environ.get("CITYOPS_CLUSTER_BASE_PORT") or 0) or None)
NODE_PORTS = tuple(n.native_port for n in SITE.nodes)     # shard 1 replicas 1, 2; shard 2 replicas 1, 2


@pytest.fixture
def cs(cluster_env: dict[str, str], tmp_path: Path) -> Iterator[Settings]:
    """Settings of one test on the cluster: a database, topics and consumer groups of its own."""
    tag = "c" + uuid.uuid4().hex[:10]
    base = Settings.from_env({**os.environ, **cluster_env})
    s = replace(base, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp_path, replication_factor=None, min_insync_replicas=None)
    yield s
    drop_database(s)


@pytest.fixture(scope="module")
def migrated_db(cluster_env: dict[str, str]) -> Iterator[str]:
    """One database migrated on the cluster, shared by the tests that only write rows of their own into it
    (each migration ON CLUSTER takes half a minute on 18.16)."""
    s = replace(Settings.from_env({**os.environ, **cluster_env}),
                clickhouse_database=f"cityops_m{uuid.uuid4().hex[:10]}")
    migrate(s, cluster="cityops")
    yield s.clickhouse_database
    drop_database(s)


def node(s: Settings, port: int) -> ClickHouse:
    return ClickHouse(replace(s, clickhouse_port=port), database="default")


def test_every_node_lists_cityops_as_two_shards_of_two_replicas(cs: Settings) -> None:
    for port in NODE_PORTS:
        ch = node(cs, port)
        try:
            rows = ch.execute("SELECT shard_num, replica_num, port FROM system.clusters WHERE cluster = 'cityops' "
                              "ORDER BY shard_num, replica_num")
            macros = dict(ch.execute("SELECT macro, substitution FROM system.macros"))
        finally:
            ch.close()
        assert rows == [(1, 1, NODE_PORTS[0]), (1, 2, NODE_PORTS[1]), (2, 1, NODE_PORTS[2]), (2, 2, NODE_PORTS[3])]
        i = NODE_PORTS.index(port)
        assert macros == {"shard": str(i // 2 + 1), "replica": f"s{i // 2 + 1}r{i % 2 + 1}"}


def test_migrate_twice_on_the_cluster(cs: Settings) -> None:
    every = sorted(f.name[:4] for f in (ROOT / "pipeline" / "sink" / "migrations").glob("*.sql"))
    assert every[:2] == ["0001", "0002"] and len(every) >= 9
    assert migrate(cs, cluster="cityops") == every
    assert migrate(cs, cluster="cityops") == []
    assert {r.state for r in status(cs, cluster="cityops")} == {"applied"}
    db = cs.clickhouse_database
    for port in NODE_PORTS:
        ch = node(cs, port)
        try:
            engines = dict(ch.execute("SELECT name, engine FROM system.tables WHERE database = %(d)s", {"d": db}))
            columns = {r[0] for r in ch.execute("SELECT name FROM system.columns WHERE database = %(d)s "
                                                "AND table = 'cases'", {"d": db})}
        finally:
            ch.close()
        assert engines["events_local"] == "ReplicatedReplacingMergeTree", port
        assert engines["cases_local"] == "ReplicatedReplacingMergeTree", port
        assert engines["events"] == engines["cases"] == "Distributed", port
        assert {"kind", "escalations", "verify_due_at"} <= columns, port     # 0004's ALTERs reached every node


def test_topics_and_changelogs_are_created_with_three_copies_and_min_isr_two(cs: Settings,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    created = ensure_topics(cs)
    assert sorted(created) == sorted(cs.topics.all())
    changelog = f"{cs.app_id}-ingest-test-changelog"
    with caplog.at_level(logging.ERROR, "cityops.topics"):
        counts, warnings = ensure_derived(cs, {changelog: cs.topics.raw_hotline}, "test")
    assert counts == {cs.topics.raw_hotline: cs.partitions} and warnings == [] and not caplog.records
    admin = KafkaAdminClient(**cs.kafka_client_options())
    try:
        assert replication(cs, admin).factor == 3
        wait_visible(admin, cs.topics.all() + [changelog])     # on the broker this client asks, too
        for t in admin.describe_topics(cs.topics.all() + [changelog]):
            assert {len(p["replica_nodes"]) for p in t["partitions"]} == {3}, t["name"]
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)
                                            for name in cs.topics.all() + [changelog]])
        assert {v["min.insync.replicas"]["value"] for v in described["topic"].values()} == {"2"}
    finally:
        admin.close()


def test_a_worker_says_loudly_when_its_topics_are_replicated_less_than_configured(
        cs: Settings, caplog: pytest.LogCaptureFixture) -> None:
    admin = KafkaAdminClient(**cs.kafka_client_options())
    try:   # the raw hotline topic as cityops made it before replication was configuration: one copy
        admin.create_topics([NewTopic(name=cs.topics.raw_hotline, num_partitions=4, replication_factor=1)])
        rep = replication(cs, admin)
    finally:
        admin.close()
    with caplog.at_level(logging.ERROR, "cityops.topics"):
        _, warnings = ensure_derived(cs, {f"{cs.app_id}-ingest-x-changelog": cs.topics.raw_hotline}, "ingest")
    assert warnings == [f"{cs.topics.raw_hotline}: 1 replica(s), min.insync.replicas=2; configured 3 and 2"]
    assert any("TOPIC REPLICATED LESS THAN CONFIGURED" in r.getMessage() and cs.topics.raw_hotline in r.getMessage()
               for r in caplog.records)
    admin = KafkaAdminClient(**cs.kafka_client_options())
    try:
        assert under_replicated(admin, cs.topics.all(), replace(rep, factor=1)) == []   # with 1 configured: fine
    finally:
        admin.close()


def test_events_through_a_worker_land_on_their_shard_and_on_both_its_replicas(cs: Settings, migrated_db: str,
                                                                              tmp_path: Path) -> None:
    cs = replace(cs, clickhouse_database=migrated_db)
    ensure_topics(cs)
    tickets = {f"CL-{i}": (121.470 + 0.008 * (i % 6), 31.255 + 0.008 * (i // 6)) for i in range(24)}
    produce(cs, cs.topics.raw_hotline,
            [(t.encode(), raw(hotline(t, code="E0501", lon=lon, lat=lat))) for t, (lon, lat) in tickets.items()])
    db = cs.clickhouse_database
    ids = {f"hotline:{t}" for t in tickets}
    log = tmp_path / "worker.log"
    with running_worker(cs, log, {"CITYOPS_CLICKHOUSE_HTTP_PORT": str(cs.clickhouse_http_port or "")}):
        ch = node(cs, NODE_PORTS[0])
        try:
            assert wait_for(lambda: ch.execute(f"SELECT uniqExact(event_id) FROM {db}.events")[0][0] >= len(ids),
                            timeout_s=120), log.read_text()[-3000:]
        finally:
            ch.close()
    assert "LESS THAN CONFIGURED" not in log.read_text()
    placed: dict[str, set[int]] = {}
    per_node: dict[int, set[str]] = {}
    for port in NODE_PORTS:
        ch = node(cs, port)
        try:
            ch.execute(f"SYSTEM SYNC REPLICA {db}.events_local")
            rows = ch.execute(f"SELECT event_id, modulo(sipHash64(subdistrict), 2) + 1 FROM {db}.events_local FINAL "
                              "WHERE event_id IN %(ids)s", {"ids": tuple(ids)})
        finally:
            ch.close()
        shard = NODE_PORTS.index(port) // 2 + 1
        per_node[port] = {str(r[0]) for r in rows}
        assert {int(r[1]) for r in rows} <= {shard}, f"rows of another shard on node {port}"
        for r in rows:
            placed.setdefault(str(r[0]), set()).add(shard)
    assert set(placed) == ids                                        # every row stored ...
    assert all(len(shards) == 1 for shards in placed.values())       # ... on exactly one shard, the one it hashes to
    s1r1, s1r2, s2r1, s2r2 = (per_node[p] for p in NODE_PORTS)
    assert s1r1 == s1r2 and s2r1 == s2r2                            # on both replicas of its shard
    assert s1r1 and s2r1                                             # and the keys did spread over both shards


def placed_now(cs: Settings, ids: set[str]) -> dict[int, set[str]]:
    """Which of `ids` each node's local events table holds at this moment (no waiting, no SYNC REPLICA)."""
    out = {}
    for port in NODE_PORTS:
        ch = node(cs, port)
        try:
            rows = ch.execute(f"SELECT event_id FROM {cs.clickhouse_database}.events_local")
        finally:
            ch.close()
        out[port] = {str(r[0]) for r in rows} & ids
    return out


def test_a_sink_insert_is_on_its_shard_and_both_replicas_when_it_returns(cs: Settings, migrated_db: str) -> None:
    """insert_distributed_sync with insert_quorum=2: when the sink's insert returns, every row is on both replicas of
    its shard. (With CITYOPS_INSERT_SYNC=0 the rows are still queued on the receiving node at that moment.)"""
    from pipeline.sink.transport import ClickHouseHttp

    cs = replace(cs, clickhouse_database=migrated_db)
    s = replace(cs, insert_quorum=2)
    subdistricts = [f"31010900{i}" for i in range(8)]
    ids = [f"t:{uuid.uuid4().hex}" for _ in range(400)]
    columns = ["event_id", "source", "case_id", "subdistrict", "received_at", "ingested_at"]
    data = [ids, ["hotline"] * 400, ids, [subdistricts[i % 8] for i in range(400)], [1764576000] * 400,
            [1764576000] * 400]
    http = ClickHouseHttp(s)
    try:
        assert http.insert_columns("events", columns, data) == 400
    finally:
        http.close()
    now = placed_now(cs, set(ids))
    s1r1, s1r2, s2r1, s2r2 = (now[p] for p in NODE_PORTS)
    assert s1r1 == s1r2 and s2r1 == s2r2 and not s1r1 & s2r1 and s1r1 | s2r1 == set(ids)
    ch = node(cs, NODE_PORTS[0])
    try:
        expected = {str(r[0]) for r in ch.execute(f"SELECT event_id FROM {cs.clickhouse_database}.events "
                                                  "WHERE modulo(sipHash64(subdistrict), 2) = 0 AND event_id IN %(ids)s",
                                                  {"ids": tuple(ids)})}
    finally:
        ch.close()
    assert s1r1 == expected & set(ids)                               # shard 1 holds the keys hashing to it


def test_a_block_retried_through_another_node_is_stored_once(cs: Settings, migrated_db: str) -> None:
    """What the sink does when the node it writes through is lost mid-insert: it sends the same block again through
    the next node. Here the same block (rows of both shards) goes into the Distributed `events` through each of the
    four nodes in turn: every node splits it by the sharding key into the same sub-blocks, and each shard's
    Replicated table drops a sub-block whose checksum is already in the shard's ZooKeeper log, whichever replica
    receives it (`insert_deduplicate`). Merges are stopped, so a duplicate could not be collapsed meanwhile by
    ReplacingMergeTree: the rows counted are the rows inserted. (With `insert_deduplicate=0` each node's copy stays:
    4 times the rows.)"""
    from pipeline.sink.transport import ClickHouseHttp

    db = migrated_db
    ids = [f"t:{uuid.uuid4().hex}" for _ in range(300)]
    columns = ["event_id", "source", "case_id", "subdistrict", "received_at", "ingested_at"]
    data = [ids, ["hotline"] * 300, ids, [f"31010900{i % 8}" for i in range(300)], [1764576000] * 300,
            [1764576000] * 300]
    for n in SITE.nodes:
        ch = node(cs, n.native_port)
        try:
            ch.execute(f"SYSTEM STOP MERGES {db}.events_local")
        finally:
            ch.close()
    per_node: dict[str, int] = {}
    try:
        for n in SITE.nodes:
            http = ClickHouseHttp(replace(cs, clickhouse_database=db, clickhouse_port=n.native_port,
                                          clickhouse_http_port=n.http_port))
            try:
                assert http.insert_columns("events", columns, data) == 300
            finally:
                http.close()
        for n in SITE.nodes:
            ch = node(cs, n.native_port)
            try:
                ch.execute(f"SYSTEM SYNC REPLICA {db}.events_local")
                per_node[n.name] = ch.execute(f"SELECT count() FROM {db}.events_local WHERE event_id IN %(ids)s",
                                              {"ids": tuple(ids)})[0][0]
            finally:
                ch.close()
    finally:
        for n in SITE.nodes:
            ch = node(cs, n.native_port)
            try:
                ch.execute(f"SYSTEM START MERGES {db}.events_local")
            finally:
                ch.close()
    assert per_node["s1r1"] == per_node["s1r2"] and per_node["s2r1"] == per_node["s2r2"], per_node
    assert per_node["s1r1"] + per_node["s2r1"] == 300 and per_node["s1r1"] and per_node["s2r1"], per_node


def test_cluster_down_leaves_nothing_running(cluster_env: dict[str, str]) -> None:
    """Runs last in the module: stops the profile (and starts it again when it ran before the tests)."""
    was_running = cluster_sh("status", check=False).returncode == 0
    cluster_sh("down")
    assert cluster_sh("status", check=False).returncode == 3
    ours = str(Settings.from_env().var_dir / "cluster")
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ours in cmdline and "pytest" not in cmdline:
            left.append(cmdline[:200])
    assert left == []
    if was_running:
        cluster_sh("up")
