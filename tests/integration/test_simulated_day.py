"""A simulated district day through the real stack, checked against the simulator's ground truth *through the
reports*: how many cases (problems and device faults), who found each first, which hot spots recur, and where
each case ended up. The truth (format 2) follows docs/cases.md; a device fault it is not `certain` of (a silence
near the end of the day) may be raised or not. The run and the oracle: tests/integration/simday.py (the cluster's
day, tests/cluster/test_day_on_the_cluster.py, uses them too)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import Settings, Topics
from pipeline.runtime.topics import ensure_topics
from pipeline.simulate.config import SimConfig
from pipeline.simulate.generate import simulate
from pipeline.sink.migrate import migrate
from pipeline.sink.transport import ClickHouse
from tests.integration.simday import check_against_truth, run_day

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def test_simulated_day_matches_its_truth(tmp_path: Path) -> None:
    tag = "s" + uuid.uuid4().hex[:10]
    base = Settings.from_env()
    s = replace(base, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp_path)
    ensure_topics(s)
    migrate(s)
    sim = simulate(SimConfig(days=1, seed=11, sensors=300, hotline_per_day={"310109": 400}).checked())
    ch = ClickHouse(s)
    try:
        run_day(s, sim, tmp_path)
        check_against_truth(ch, s, sim)
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
