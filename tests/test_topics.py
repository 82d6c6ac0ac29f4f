"""Deleting a finished run's topics (`cityops topics delete`, and the bench at the end of each run): a run's own
topics and changelogs go, nobody else's, and never the unprefixed production topics."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from pipeline.bench import e2e as bench
from pipeline.bench.harness import BenchConfig
from pipeline.config import Settings, Topics
from pipeline.runtime.topics import delete_topics, ensure_topics, owned_by
from tests.support import wait_for

PRODUCTION = Topics().all() + ["cityops-ingest-sensor-state", "cityops-cases-state"]


@pytest.mark.parametrize("prefix", ["c", "ci", "cityops", "cityops-", "i", "in", "ingest", "cases", "r", "raw"])
def test_no_prefix_reaches_the_production_topics(prefix: str) -> None:
    assert not [name for name in PRODUCTION if owned_by(name, prefix)]


def test_a_run_owns_its_phases_topics_and_changelogs() -> None:
    tag = "bench261123074338"
    mine = [*Topics.with_prefix(tag + "w1").all(), *Topics.with_prefix(tag + "nv").all(),
            f"cityops-{tag}w1-ingest-sensor-state", f"cityops-{tag}w1s-cases-state"]
    others = [*Topics.with_prefix("bench261123080000w1").all(), "cityops-bench261123080000w1-cases-state",
              *Topics.with_prefix("tabc").all(), f"x{tag}", f"{tag}-notes", "__consumer_offsets"]
    assert all(owned_by(n, tag) for n in mine)
    assert not [n for n in others if owned_by(n, tag)]
    assert not owned_by(mine[0], "")


def test_an_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="without a prefix"):
        delete_topics(Settings(), "  ")


def test_the_bench_deletes_its_topics_even_when_a_phase_fails(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    deleted: list[str] = []

    def failing_phases(*args: Any) -> dict[str, Any]:
        raise RuntimeError("a phase failed")
    monkeypatch.setattr(bench, "_run_phases", failing_phases)
    monkeypatch.setattr(bench, "delete_run_topics", lambda base, tag, log: deleted.append(tag))
    with pytest.raises(RuntimeError, match="a phase failed"):
        bench.run_bench(BenchConfig(out_dir=tmp_path), Settings(), log=lambda s: None)
    assert len(deleted) == 1 and deleted[0].startswith("bench")
    monkeypatch.setattr(bench, "_run_phases", lambda *args: {"ok": True})
    assert bench.run_bench(BenchConfig(out_dir=tmp_path, keep_topics=True), Settings(),
                           log=lambda s: None) == {"ok": True}
    assert len(deleted) == 1


@pytest.mark.kafka
def test_deleting_a_run_leaves_other_runs_and_production_alone(settings: Settings) -> None:
    tag = "bench" + uuid.uuid4().hex[:10]
    other = "bench" + uuid.uuid4().hex[:10]
    runs = [replace(settings, topic_prefix=t, topics=Topics.with_prefix(t)) for t in (tag + "w1", tag + "nv", other)]
    for s in runs:
        ensure_topics(s)
    ensure_topics(settings)                 # the unprefixed topics, as `make run` creates them
    admin = KafkaAdminClient(client_id="cityops-test", **settings.kafka_client_options())
    try:
        changelog = f"cityops-{tag}w1-ingest-sensor-state"
        admin.create_topics([NewTopic(name=changelog, num_partitions=1, replication_factor=1)])
        mine = {*runs[0].topics.all(), *runs[1].topics.all(), changelog}
        deleted: list[str] = []
        bench.delete_run_topics(settings, tag, deleted.append)
        assert f"deleted the run's {len(mine)} topics" in deleted[0]

        def left() -> set[str]:
            return set(admin.list_topics())
        # deletion is asynchronous on the broker: wait until the topics are gone from its metadata
        assert wait_for(lambda: not (mine & left()), 60), sorted(mine & left())
        assert set(runs[2].topics.all()) <= left()
        assert set(settings.topics.all()) <= left()
    finally:
        delete_topics(settings, other)
        admin.close()
