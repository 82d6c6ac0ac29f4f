"""deploy/docker-compose.yml describes the same system as the local stack: topics, ports, commands."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.config import ROOT, Settings
from pipeline.topics import _COMPACTED_SUFFIXES

COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def local_default(name: str) -> str:
    text = (ROOT / "deploy" / "local" / "common.sh").read_text(encoding="utf-8")
    m = re.search(rf'{name}="\$\{{[A-Z_]+:-(\d+)\}}"', text)
    assert m, f"{name} not found in deploy/local/common.sh"
    return m.group(1)


def test_compose_lists_exactly_the_topics_the_code_creates() -> None:
    assert compose()["x-cityops-topics"] == Settings.from_env({}).topics.all()
    assert all(t.endswith(_COMPACTED_SUFFIXES) is (t == "cityops.case-state") for t in Settings().topics.all())


def test_compose_uses_the_local_stack_ports() -> None:
    c = compose()
    kafka_port, ch_port, ch_http = (local_default(n) for n in ("KAFKA_PORT", "CH_PORT", "CH_HTTP_PORT"))
    assert f"{kafka_port}:{kafka_port}" in c["services"]["kafka"]["ports"]
    assert f"PLAINTEXT://:{kafka_port}" in c["services"]["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert f"{ch_port}:9000" in c["services"]["clickhouse"]["ports"]
    assert f"{ch_http}:8123" in c["services"]["clickhouse"]["ports"]
    assert Settings.from_env({}).kafka_bootstrap.endswith(f":{kafka_port}")
    assert Settings.from_env({}).clickhouse_port == int(ch_port)


def test_compose_kafka_version_matches_the_local_pom() -> None:
    pom = (ROOT / "deploy" / "local" / "pom.xml").read_text(encoding="utf-8")
    version = re.search(r"<kafka.version>([\d.]+)</kafka.version>", pom)
    assert version and compose()["services"]["kafka"]["image"] == f"apache/kafka:{version.group(1)}"


def test_compose_services_run_cityops_commands_that_exist() -> None:
    from pipeline.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    c = compose()["services"]
    assert c["worker"]["command"][0] in commands
    assert {"topics", "db"} <= commands
    assert compose()["x-cityops-env"]["CITYOPS_ENV"] == "production"
    assert Path(ROOT / c["worker"]["build"]["context"].replace("..", ".") / "deploy" / "Dockerfile").exists()
