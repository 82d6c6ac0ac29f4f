"""Replication is configuration: every topic cityops creates gets the configured copies and min.insync.replicas,
by default from the broker count; topics replicated less than configured are found (unit tests, a fake admin; the
cluster tests do the same against three real brokers)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.runtime.topics import Replication, new_topic, replication, under_replicated


class FakeAdmin:
    def __init__(self, brokers: int, topics: dict[str, list[int]] | None = None,
                 topic_isr: dict[str, str] | None = None, broker_isr: str | None = None) -> None:
        self.brokers, self.topics = brokers, topics or {}
        self.topic_isr, self.broker_isr = topic_isr or {}, broker_isr

    def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"broker_id": i + 1} for i in range(self.brokers)]}

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "error_code": 0, "partitions": [{"replica_nodes": list(range(c))} for c in self.topics[n]]}
                if n in self.topics else {"name": n, "error_code": 3, "partitions": []} for n in names]

    def describe_configs(self, resources: list[Any], config_filter: str = "modified") -> dict[str, Any]:
        """As kafka-python's: with config_filter="all" each topic's effective value (its own, else the broker's,
        else Kafka's default 1); with the default "modified", only values set on the topic."""
        def value(name: str) -> str | None:
            own = self.topic_isr.get(name)
            return own if config_filter != "all" else own or self.broker_isr or "1"
        return {"topic": {r.name: {} if value(r.name) is None else {"min.insync.replicas": {"value": value(r.name)}}
                          for r in resources if r.name in self.topics}}


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))])
def test_the_default_follows_the_broker_count(brokers: int, expected: tuple[int, int]) -> None:
    rep = replication(Settings(), FakeAdmin(brokers))  # type: ignore[arg-type]
    assert (rep.factor, rep.min_insync) == expected


def test_configured_values_win_and_impossible_ones_are_refused() -> None:
    s = Settings.from_env({"CITYOPS_REPLICATION_FACTOR": "2", "CITYOPS_MIN_INSYNC_REPLICAS": "2"})
    assert replication(s, FakeAdmin(3)) == Replication(2, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has 1 broker"):
        replication(replace(s, min_insync_replicas=None), FakeAdmin(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 1 and the replication factor 2"):
        replication(replace(s, min_insync_replicas=3), FakeAdmin(3))  # type: ignore[arg-type]
    assert Settings.from_env({}).replication_factor is None
    assert Settings.from_env(s.to_env()).min_insync_replicas == 2


def test_new_topics_carry_the_factor_and_min_isr() -> None:
    topic = new_topic("x", 4, Replication(3, 2), compact=True)
    assert topic.replication_factor == 3 and topic.num_partitions == 4
    assert topic.topic_configs == {"min.insync.replicas": "2", "cleanup.policy": "compact",
                                   "segment.bytes": str(8 * 1024 * 1024), "segment.ms": "3600000"}


def test_under_replicated_topics_are_named_with_what_they_have() -> None:
    admin = FakeAdmin(3, topics={"ok": [3, 3], "one-copy": [1, 1], "one-partition-short": [3, 2], "low-isr": [3],
                                 "broker-isr": [3]},
                      topic_isr={"ok": "2", "one-copy": "2", "one-partition-short": "2", "low-isr": "1"},
                      broker_isr="2")
    problems = under_replicated(admin, ["ok", "one-copy", "one-partition-short", "low-isr", "broker-isr", "absent"],  # type: ignore[arg-type]
                                Replication(3, 2))
    assert problems == ["low-isr: 3 replica(s), min.insync.replicas=1; configured 3 and 2",
                        "one-copy: 1 replica(s), min.insync.replicas=2; configured 3 and 2",
                        "one-partition-short: 2 replica(s), min.insync.replicas=2; configured 3 and 2"]
    admin.broker_isr = None     # Kafka's own default, 1, is below 2
    assert under_replicated(admin, ["broker-isr"], Replication(3, 2)) == [  # type: ignore[arg-type]
        "broker-isr: 3 replica(s), min.insync.replicas=1; configured 3 and 2"]


def test_a_child_process_gets_the_http_port_of_the_server_it_is_pointed_at() -> None:
    """The cluster's settings (a node's native and HTTP ports) handed to a worker over an environment that names
    the single-node stack's HTTP port: the worker must write to the cluster node (make bench-cluster's first run
    wrote to the other server and got UNKNOWN_DATABASE)."""
    cluster = Settings.from_env({"CITYOPS_CLICKHOUSE_PORT": "24000", "CITYOPS_CLICKHOUSE_HTTP_PORT": "24123"})
    child = Settings.from_env({"CITYOPS_CLICKHOUSE_HTTP_PORT": "14123", **cluster.to_env()})
    assert (child.clickhouse_port, child.clickhouse_http_port) == (24000, 24123)
    native_only = Settings.from_env({"CITYOPS_CLICKHOUSE_HTTP_PORT": "14123",
                                     **Settings.from_env({"CITYOPS_CLICKHOUSE_HTTP_PORT": "0"}).to_env()})
    assert native_only.clickhouse_http_port == 0
