"""The local cluster profile for every module of tests/cluster: started once per session when it is not running,
stopped at the end when the session started it (test_profile's last test also checks that `down` stops it all)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pipeline.config import ROOT, Settings

SCRIPT = ROOT / "deploy" / "local" / "cluster.sh"


def cluster_sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900, check=check)


@pytest.fixture(scope="session")
def cluster_env() -> Iterator[dict[str, str]]:
    was_running = cluster_sh("status", check=False).returncode == 0
    if not was_running:
        up = cluster_sh("up", check=False)
        assert up.returncode == 0, up.stderr[-4000:]
    exports = cluster_sh("env").stdout.split()
    yield dict(e.split("=", 1) for e in exports if "=" in e)
    if not was_running:
        cluster_sh("down", check=False)


def drop_database(settings: Settings, *names: str) -> None:
    """DROP DATABASE ... ON CLUSTER cityops of each of `names` (default: the settings' database), through the
    settings' node."""
    from pipeline.sink.transport import ClickHouse

    db = ClickHouse(settings, database="default")
    try:
        for name in names or (settings.clickhouse_database,):
            db.execute(f"DROP DATABASE IF EXISTS {name} ON CLUSTER cityops")
    finally:
        db.close()
