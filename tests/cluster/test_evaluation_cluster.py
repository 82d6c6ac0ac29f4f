"""The evaluation (综合评价) on the cluster layout (Distributed tables over 2 shards x 2 replicas, deploy/local/
cluster.sh) gives what it gives on a single server with the same rows (issue #20).

The rows: the hand-built month of tests/analytics/test_evaluation.py (every case kind the formulas distinguish),
a generated history of 400 cases over April to June 2024 in several sub-districts, and the inspectors' and the
checks' scenarios of tests/analytics/test_evaluation_inspectors.py and test_evaluation_checks.py (March 2026).
They are written by the sink to a database migrated on the cluster (inserts into the Distributed tables, each
row to its shard) and to one on the local server; every evaluation (region at each level, department,
position), per month, must be equal on both.
Needs the local stack (`make up`) and starts the cluster profile when it is not running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.model.records import SinkBatch
from pipeline.reports.evaluation import evaluate
from pipeline.reports.query import Filters
from pipeline.sink.migrate import migrate
from pipeline.sink.sink import ClickHouseSink
from pipeline.sink.transport import ClickHouse
from tests.analytics.history import generate
from tests.analytics.test_evaluation import month
from tests.analytics.test_evaluation_checks import run_scenario as checks_scenario
from tests.analytics.test_evaluation_inspectors import run_scenario
from tests.cluster.conftest import cluster_sh, drop_database
from tests.cluster.test_profile import NODE_PORTS, node

pytestmark = [pytest.mark.cluster, pytest.mark.clickhouse]

MONTHS = [(date(2024, 4, 1), date(2024, 5, 1)), (date(2024, 5, 1), date(2024, 6, 1)),
          (date(2024, 6, 1), date(2024, 7, 1)), (date(2026, 3, 1), date(2026, 4, 1))]
AS_OF = datetime(2026, 6, 1)


@pytest.fixture(scope="module")
def cluster_settings() -> Iterator[Settings]:
    was_running = cluster_sh("status", check=False).returncode == 0
    if not was_running:
        up = cluster_sh("up", check=False)
        assert up.returncode == 0, up.stderr[-4000:]
    env = dict(e.split("=", 1) for e in cluster_sh("env").stdout.split() if "=" in e)
    s = replace(Settings.from_env({**os.environ, **env}), clickhouse_database=f"cityops_e{uuid.uuid4().hex[:10]}")
    try:
        yield s
    finally:
        drop_database(s)
        if not was_running:
            cluster_sh("down", check=False)


def rows() -> list[SinkBatch]:
    history = generate(seed=11, n_cases=400, start=datetime(2024, 4, 1), days=90, device_faults=0.05,
                       refirsts=0.05)
    return [*history.batches, month(), run_scenario(), checks_scenario()]


def load(s: Settings, batches: list[SinkBatch], cluster: str | None) -> ClickHouse:
    migrate(s, cluster=cluster)
    sink = ClickHouseSink(s)
    try:
        for b in batches:
            sink.write(b)
    finally:
        sink.close()
    return ClickHouse(s)


def evaluations(db: ClickHouse) -> dict[tuple[Any, ...], Any]:
    out: dict[tuple[Any, ...], Any] = {}
    for since, until in MONTHS:
        for level in ("district", "subdistrict", "grid"):
            units = evaluate(db, "region", Filters(), since, until, level=level, as_of=AS_OF)
            out["region", level, since] = [(u.unit, u.values, u.score, u.grade) for u in units]
        for of in ("department", "position"):
            units = evaluate(db, of, Filters(), since, until, as_of=AS_OF)  # type: ignore[arg-type]
            out[of, since] = [(u.of, u.unit, u.values, u.score, u.grade) for u in units]
        units = evaluate(db, "position", Filters(subdistrict="310109009", team="patrol-a"), since, until,
                         as_of=AS_OF)
        out["position filtered", since] = [(u.of, u.unit, u.values) for u in units]
    return out


def test_the_evaluation_on_the_cluster_equals_the_single_server(cluster_settings: Settings,
                                                                isolated_settings: Settings) -> None:
    batches = rows()
    single = load(isolated_settings, batches, None)
    clustered = load(cluster_settings, batches, "cityops")
    try:
        expected = evaluations(single)
        got = evaluations(clustered)
    finally:
        single.close()
        clustered.close()
    assert got == expected
    # the rows really are spread over the two shards (the first replica of each holds part of the cases)
    per_shard = []
    for port in (NODE_PORTS[0], NODE_PORTS[2]):
        ch = node(cluster_settings, port)
        try:
            db = cluster_settings.clickhouse_database
            per_shard.append(ch.execute(f"SELECT count() FROM {db}.cases_local")[0][0])
        finally:
            ch.close()
    assert all(n > 0 for n in per_shard), per_shard
    # the comparison is not between two empty answers: every kind of evaluation found its units
    may, march = date(2024, 5, 1), date(2026, 3, 1)
    assert len(expected["region", "subdistrict", may]) >= 2
    assert {u[0] for u in expected["department", may]} == {"department"}
    assert {u[0] for u in expected["position", march]} >= {"position.inspector", "position.checker"}
    assert {u[1] for u in expected["position filtered", march] if u[0] == "position.inspector"} == {"I1"}
