"""deploy/cluster/cityops.yaml is the one definition of the `cityops` cluster: the Kubernetes site's ClickHouse
files and manifests agree with it (and the check notices when they do not), and the local profile it renders is
2 shards x 2 replicas on ports of its own."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline import deploy


def test_the_committed_deploy_files_agree_with_the_source() -> None:
    assert deploy.check_k8s(deploy.load("k8s")) == []


def copy_deploy(tmp_path: Path) -> tuple[Path, Path]:
    ch, k8s = tmp_path / "clickhouse", tmp_path / "k8s"
    shutil.copytree(deploy.CLICKHOUSE_DIR, ch)
    shutil.copytree(deploy.K8S_DIR, k8s)
    return ch, k8s


def test_the_check_fails_when_a_manifest_or_a_config_drifts(tmp_path: Path) -> None:
    site = deploy.load("k8s")
    ch, k8s = copy_deploy(tmp_path)
    assert deploy.check_k8s(site, ch, k8s) == []
    kafka = k8s / "kafka.yaml"
    kafka.write_text(kafka.read_text().replace('KAFKA_MIN_INSYNC_REPLICAS, value: "2"',
                                               'KAFKA_MIN_INSYNC_REPLICAS, value: "1"'))
    shards = k8s / "clickhouse.yaml"
    shard3 = '\n  selector:\n    matchLabels: {app: clickhouse, shard: "3"}'
    shards.write_text(shards.read_text().replace("replicas: 2" + shard3, "replicas: 3" + shard3))
    (ch / "macros" / "macros-s4-r2.xml").unlink()
    cluster = ch / "config.d" / "cityops-cluster.xml"
    cluster.write_text(cluster.read_text().replace("<port>9000</port>", "<port>9001</port>", 1))
    problems = "\n".join(deploy.check_k8s(site, ch, k8s))
    assert "KAFKA_MIN_INSYNC_REPLICAS='1'" in problems
    assert "clickhouse-s3 has 3 replicas" in problems
    assert "macros-s4-r2.xml: differs" in problems
    assert "cityops-cluster.xml: differs" in problems


def test_the_local_profile_is_two_shards_of_two_replicas_on_distinct_ports(tmp_path: Path) -> None:
    site = deploy.load("local", base_port=23000)
    lines = deploy.render_local(site, tmp_path)
    kinds = [line.split()[0] for line in lines]
    assert kinds.count("clickhouse") == 4 and kinds.count("kafka") == 3 and kinds.count("zookeeper") == 1
    ports = [int(w) for line in lines for w in line.split()[1:] if w.isdigit() and int(w) > 1000]
    ports += [n.interserver_port for n in site.nodes]
    assert len(ports) == len(set(ports)) and all(23000 <= p < 23500 for p in ports)
    root = ET.parse(tmp_path / "clickhouse-s2r1" / "config.d" / "cluster.xml").getroot()
    shards = root.findall("./remote_servers/cityops/shard")
    assert [[int(str(r.findtext("port"))) for r in s.findall("replica")] for s in shards] == \
        [[23000, 23100], [23200, 23300]]
    macros = ET.parse(tmp_path / "clickhouse-s2r1" / "config.d" / "macros.xml").getroot()
    assert (macros.findtext("macros/shard"), macros.findtext("macros/replica")) == ("2", "s2r1")
    broker = (tmp_path / "kafka-2" / "server.properties").read_text()
    for setting in ("node.id=2", "default.replication.factor=3", "min.insync.replicas=2",
                    "transaction.state.log.min.isr=2", "offsets.topic.replication.factor=3",
                    "unclean.leader.election.enable=false",
                    "controller.quorum.voters=1@127.0.0.1:23093,2@127.0.0.1:23193,3@127.0.0.1:23293"):
        assert setting in broker.splitlines(), setting
