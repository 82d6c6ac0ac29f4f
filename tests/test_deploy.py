"""deploy/docker-compose.yml describes the same system as the local stack: topics, ports, commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config import ROOT, Settings
from pipeline.runtime.topics import _COMPACTED_SUFFIXES

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


def _await_exec(tmp_path: Path, server: str) -> list[str]:
    """Start `server` the way the stack scripts do, then ask common.sh's await_exec about it, 40 times."""
    script = f"""
source {ROOT / 'deploy/local/common.sh'}
for i in $(seq 1 40); do
  nohup {server} >/dev/null 2>&1 </dev/null &
  echo $! > {tmp_path}/pid
  if await_exec {tmp_path}/pid marker-{tmp_path.name}; then echo up; else echo gone; fi
done
wait
"""
    # from a file: with `bash -c`, the forked shell's command line (the script) holds the marker, so a server
    # not yet exec'd, or one exiting at once, was taken for the server on a busy machine
    (tmp_path / "starts.sh").write_text(script, encoding="utf-8")
    run = subprocess.run(["bash", str(tmp_path / "starts.sh")], capture_output=True, text=True, timeout=120,
                         check=True)
    return run.stdout.split()


def test_a_server_just_started_is_not_taken_for_one_that_exited(tmp_path: Path) -> None:
    # Right after `&` the pid is still the forked shell's; checking its command line at once
    # reported "exited during start" on one start in six (and failed a CI run).
    # it lives 5 s: one living 0.3 s had exited before the check's first look on a machine at load 40
    server = f"{sys.executable} -c 'import time; time.sleep(5)' marker-{tmp_path.name}"
    assert _await_exec(tmp_path, server) == ["up"] * 40


def test_a_server_that_exits_at_once_is_reported_gone(tmp_path: Path) -> None:
    assert _await_exec(tmp_path, "/bin/false") == ["gone"] * 40
