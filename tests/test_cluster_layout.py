"""deploy/cluster/cityops.yaml is the one definition of the `cityops` cluster: the Kubernetes site's ClickHouse
files and manifests agree with it (and the check notices when they do not), and the local profile it renders is
2 shards x 2 replicas on ports of its own."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from pipeline import compose, deploy


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


# -- the docker-compose `cluster` profile (deploy/docker-compose.cluster.yml, pipeline.compose) -------------------

def compose_services() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(compose.COMPOSE_FILE.read_text(encoding="utf-8"))
    return {name: svc for name, svc in doc["services"].items() if "cluster" in svc.get("profiles", [])}


def test_the_committed_compose_files_agree_with_the_source() -> None:
    assert compose.check_compose() == []


def test_the_compose_cluster_mirrors_the_local_profile_service_by_service_and_port_by_port() -> None:
    """Read back from the committed YAML, independently of the renderer: as many brokers, ZooKeeper nodes and
    ClickHouse nodes as the local profile, grouped into the same shards, published on the local profile's ports."""
    local = deploy.load("local")
    services = compose_services()
    brokers = sorted(n for n in services if n.startswith("kafka-"))
    nodes = sorted(n for n in services if n.startswith("clickhouse-"))
    assert len(brokers) == local.brokers == 3
    assert [n.removeprefix("clickhouse-") for n in nodes] == [n.name for n in local.nodes]
    assert [n for n in services if n.startswith("zookeeper")] == ["zookeeper"]
    published = {int(p.split(":")[0]) for name in brokers + nodes + ["zookeeper"] for p in services[name]["ports"]}
    assert published == set(local_ports(local))
    source = yaml.safe_load(deploy.SOURCE.read_text(encoding="utf-8"))["kafka"]
    for name in brokers:
        env = services[name]["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == \
            env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == str(source["replication_factor"])
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == \
            str(source["min_insync_replicas"])
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",") == [f"{b[-1]}@{b}:9093" for b in brokers]
    root = ET.parse(compose.COMPOSE_DIR / "cluster.xml").getroot()
    shards = [[r.findtext("host") for r in s.findall("replica")]
              for s in root.findall("./remote_servers/cityops/shard")]
    assert shards == [[f"clickhouse-{n.name}" for n in local.nodes if n.shard == s] for s in (1, 2)]
    assert [n.findtext("host") for n in root.findall("./zookeeper/node")] == ["zookeeper"]
    for name in nodes:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"] if v.startswith("./")}
        macros = ET.parse(deploy.ROOT / "deploy" / mounts["/etc/clickhouse-server/config.d/macros.xml"]).getroot()
        short = name.removeprefix("clickhouse-")
        assert (macros.findtext("macros/shard"), macros.findtext("macros/replica")) == (short[1], short)
        assert services[name]["hostname"] == name
    init = services["cluster-init"]
    assert init["environment"]["CITYOPS_CLUSTER"] == "cityops"
    assert init["environment"]["CITYOPS_KAFKA_BOOTSTRAP"].split(",") == [f"{b}:9092" for b in brokers]


def local_ports(site: deploy.Site) -> list[int]:
    base = site.extra["base_port"]
    return ([n.native_port for n in site.nodes] + [n.http_port for n in site.nodes]
            + [base + 100 * i + 92 for i in range(site.brokers)] + [base + 181])


def test_the_compose_check_fails_when_a_compose_file_drifts(tmp_path: Path) -> None:
    for path in compose.compose_files():
        copy = tmp_path / path.relative_to(deploy.ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    assert compose.check_compose(root=tmp_path) == []
    f = tmp_path / "deploy" / "docker-compose.cluster.yml"
    f.write_text(f.read_text().replace("KAFKA_MIN_INSYNC_REPLICAS: '2'", "KAFKA_MIN_INSYNC_REPLICAS: '1'", 1))
    (tmp_path / "deploy" / "compose" / "macros-s2r2.xml").unlink()
    problems = "\n".join(compose.check_compose(root=tmp_path))
    assert "docker-compose.cluster.yml: differs" in problems and "macros-s2r2.xml: differs" in problems
