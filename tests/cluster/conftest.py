"""The local cluster profile for every module of tests/cluster: started once per session when it is not running,
stopped at the end when the session started it (test_profile's last test also checks that `down` stops it all)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from pipeline.config import ROOT

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
