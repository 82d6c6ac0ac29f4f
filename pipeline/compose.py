"""The `cityops` cluster as Docker Compose services (profile `cluster`), rendered from deploy/cluster/cityops.yaml
(site `compose`):

    python -m pipeline.compose render     write the files below
    python -m pipeline.compose check      exit 1, listing them, when the committed files differ from the source


    deploy/docker-compose.cluster.yml     ZooKeeper, the brokers (KRaft, each a controller voter), the ClickHouse
                                          nodes, a one-shot `cluster-init` (topics, `db migrate --cluster`) and a worker
    deploy/compose/cluster.xml            remote_servers + zookeeper + distributed_ddl, mounted on every node
    deploy/compose/macros-<name>.xml      each node's {shard} and {replica}

Every service publishes its port on the host where the local profile (`make cluster-up`, default base port) has
it, so the same `cluster.sh env` settings reach either. Use: docker compose -f deploy/docker-compose.cluster.yml
--profile cluster up -d
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.deploy import ROOT, Site, cluster_xml, load, macros_xml

COMPOSE_FILE = ROOT / "deploy" / "docker-compose.cluster.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
KAFKA_IMAGE = "apache/kafka:3.9.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:24.8"
ZOOKEEPER_IMAGE = "zookeeper:3.9"
PROFILE = ["cluster"]


class _NoAliases(yaml.SafeDumper):
    """Writes a value shared by several services in full each time (no &id001 anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _kafka(site: Site, i: int, base: int) -> dict[str, Any]:
    rf, isr = str(site.kafka["replication_factor"]), str(site.kafka["min_insync_replicas"])
    voters = ",".join(f"{b + 1}@kafka-{b + 1}:9093" for b in range(site.brokers))
    host_port = base + 100 * i + 92
    return {
        "image": KAFKA_IMAGE, "profiles": PROFILE, "hostname": f"kafka-{i + 1}",
        "environment": {
            "KAFKA_NODE_ID": str(i + 1), "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
            "KAFKA_LISTENERS": f"INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:{host_port}",
            "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://kafka-{i + 1}:9092,EXTERNAL://127.0.0.1:{host_port}",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL", "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_DEFAULT_REPLICATION_FACTOR": rf, "KAFKA_MIN_INSYNC_REPLICAS": isr,
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": rf, "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": rf,
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": isr,
            "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": str(site.kafka["unclean_leader_election"]).lower(),
            "KAFKA_NUM_PARTITIONS": "4", "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "CLUSTER_ID": "Y2l0eW9wcy1jbHVzdGVyIQ",   # base64 of 16 bytes, as KRaft wants
            "KAFKA_HEAP_OPTS": "-Xmx512m -Xms128m"},
        "ports": [f"{host_port}:{host_port}"],
        "volumes": [f"kafka-{i + 1}-data:/var/lib/kafka/data"],
    }


def _clickhouse(site: Site, i: int, base: int) -> dict[str, Any]:
    node = site.nodes[i]
    return {
        "image": CLICKHOUSE_IMAGE, "profiles": PROFILE, "hostname": node.host,
        "ports": [f"{base + 100 * i}:{node.native_port}", f"{base + 100 * i + 123}:8123"],
        "volumes": [f"clickhouse-{node.name}-data:/var/lib/clickhouse",
                    "./compose/cluster.xml:/etc/clickhouse-server/config.d/cityops-cluster.xml:ro",
                    f"./compose/macros-{node.name}.xml:/etc/clickhouse-server/config.d/macros.xml:ro"],
        "ulimits": {"nofile": {"soft": 262144, "hard": 262144}},
        "depends_on": ["zookeeper"],
    }


def compose_doc(site: Site, base: int) -> dict[str, Any]:
    zk_host, _, zk_port = site.coordination[0].rpartition(":")
    env = {"CITYOPS_KAFKA_BOOTSTRAP": ",".join(f"kafka-{b + 1}:9092" for b in range(site.brokers)),
           "CITYOPS_CLICKHOUSE_HOST": site.nodes[0].host, "CITYOPS_CLICKHOUSE_PORT": str(site.nodes[0].native_port),
           "CITYOPS_CLICKHOUSE_HTTP_PORT": "8123",
           "CITYOPS_CLICKHOUSE_NODES": ",".join(f"{n.host}:{n.native_port}:8123" for n in site.nodes),
           "CITYOPS_CLUSTER": site.cluster, "CITYOPS_INSERT_QUORUM": "2",
           "CITYOPS_ENV": "production", "CITYOPS_SLA_CLOCK": "wall",
           "CITYOPS_SECRET": "${CITYOPS_SECRET:?set CITYOPS_SECRET}",
           "CITYOPS_PII_KEY": "${CITYOPS_PII_KEY:?set CITYOPS_PII_KEY}"}
    services: dict[str, Any] = {zk_host: {"image": ZOOKEEPER_IMAGE, "profiles": PROFILE, "hostname": zk_host,
                                          "ports": [f"{base + 181}:{zk_port}"],
                                          "volumes": ["zookeeper-data:/data"]}}
    brokers = [f"kafka-{b + 1}" for b in range(site.brokers)]
    nodes = [n.host for n in site.nodes]
    for b in range(site.brokers):
        services[brokers[b]] = _kafka(site, b, base)
    for i in range(len(site.nodes)):
        services[nodes[i]] = _clickhouse(site, i, base)
    image = {"build": {"context": "..", "dockerfile": "deploy/Dockerfile"}, "profiles": PROFILE, "environment": env}
    services["cluster-init"] = {**image, "entrypoint": ["sh", "-c", "cityops topics create && cityops db migrate"],
                                "restart": "on-failure", "depends_on": brokers + nodes}   # again until all answer
    services["cluster-worker"] = {**image, "command": ["worker"], "restart": "unless-stopped",
                                  "depends_on": {"cluster-init": {"condition": "service_completed_successfully"}}}
    volumes = ["zookeeper-data"] + [f"{b}-data" for b in brokers] + [f"clickhouse-{n.name}-data" for n in site.nodes]
    return {"name": "cityops-cluster", "services": services, "volumes": {v: None for v in volumes}}


def compose_files(base: int | None = None) -> dict[Path, str]:
    site = load("compose")
    local_base = int(base if base is not None else load("local").extra["base_port"])
    header = ("# The `cityops` cluster as Docker services (profile `cluster`): generated by\n"
              "# `python -m pipeline.compose render` from deploy/cluster/cityops.yaml; edit that file.\n"
              "#   docker compose -f deploy/docker-compose.cluster.yml --profile cluster up -d\n"
              "# Host ports are the local profile's (make cluster-up): `bash deploy/local/cluster.sh env` applies.\n")
    doc = yaml.dump(compose_doc(site, local_base), Dumper=_NoAliases, sort_keys=False, width=120)
    files = {COMPOSE_FILE: header + doc,
             COMPOSE_DIR / "cluster.xml": cluster_xml(site)}
    for n in site.nodes:
        files[COMPOSE_DIR / f"macros-{n.name}.xml"] = macros_xml(site, n)
    return files


def check_compose(files: dict[Path, str] | None = None, root: Path = ROOT) -> list[str]:
    """Committed compose files that differ from what the source renders (paths relative to `root`)."""
    problems = []
    for path, text in (files or compose_files()).items():
        where = root / path.relative_to(ROOT)
        if not where.exists() or where.read_text(encoding="utf-8") != text:
            problems.append(f"{path.relative_to(ROOT)}: differs from deploy/cluster/cityops.yaml (re-render it)")
    return problems


def write_compose() -> list[Path]:
    files = compose_files()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["render"]:
        print("\n".join(str(path.relative_to(ROOT)) for path in write_compose()))
        return 0
    if args == ["check"]:
        problems = check_compose()
        print("\n".join(problems) or "compose files agree with deploy/cluster/cityops.yaml")
        return 1 if problems else 0
    print("usage: python -m pipeline.compose render|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
