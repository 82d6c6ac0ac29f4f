"""The sink's list of ClickHouse nodes (CITYOPS_CLICKHOUSE_NODES): it writes through the first, moves to the next
when the node it writes through is unreachable, and backs off as on one node when a node answers with an error."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from clickhouse_driver import errors as ch_errors

from pipeline.config import Settings
from pipeline.sink.sink import Backoff, ClickHouseSink
from pipeline.sink.tables import SinkRejected, batch_blocks
from tests.analytics.test_sink import small_batch

FAST = Backoff(initial_s=0.001, cap_s=0.004)
NODES = "127.0.0.1:24000:24123,127.0.0.1:24100:24223,127.0.0.1:24200:24323"


class Node:
    """A fake node: stores blocks while up; while `errors` holds errors it raises the next one instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[Exception] = []
        self.blocks: list[tuple[str, list[list[Any]]]] = []
        self.opened = 0

    def insert_columns(self, table: str, columns: tuple[str, ...], data: list[list[Any]]) -> int:
        if self.errors:
            raise self.errors.pop(0)
        self.blocks.append((table, data))
        return len(data[0])

    def close(self) -> None:
        pass


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.nodes = {f"{s.clickhouse_host}:{s.clickhouse_port}": Node(f"{s.clickhouse_port}")
                      for s in settings.clickhouse_node_settings()}
        self.http_ports: list[int | None] = []

    def connect(self, s: Settings) -> Node:
        node = self.nodes[f"{s.clickhouse_host}:{s.clickhouse_port}"]
        node.opened += 1
        self.http_ports.append(s.clickhouse_http_port)
        return node

    def rows(self) -> dict[str, int]:
        return {n.name: sum(len(d[0]) for _, d in n.blocks) for n in self.nodes.values()}


def sink_on(settings: Settings) -> tuple[ClickHouseSink, Cluster]:
    cluster = Cluster(settings)
    return ClickHouseSink(settings, backoff=FAST, connect=cluster.connect), cluster  # type: ignore[arg-type]


def three_nodes() -> Settings:
    return Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": NODES, "CITYOPS_CLICKHOUSE_PORT": "24000"})


def test_the_node_list_defaults_to_the_one_host_and_port() -> None:
    s = Settings.from_env({"CITYOPS_CLICKHOUSE_HOST": "ch", "CITYOPS_CLICKHOUSE_PORT": "9000"})
    assert s.clickhouse_nodes == ()
    assert [(n.clickhouse_host, n.clickhouse_port) for n in s.clickhouse_node_settings()] == [("ch", 9000)]


def test_the_node_list_is_parsed_and_passed_to_child_processes() -> None:
    s = three_nodes()
    assert s.clickhouse_nodes == (("127.0.0.1", 24000, 24123), ("127.0.0.1", 24100, 24223),
                                  ("127.0.0.1", 24200, 24323))
    assert Settings.from_env(s.to_env()).clickhouse_nodes == s.clickhouse_nodes
    nodes = s.clickhouse_node_settings()
    assert [(n.clickhouse_port, n.clickhouse_http_port) for n in nodes] == [(24000, 24123), (24100, 24223),
                                                                            (24200, 24323)]
    assert all(n.clickhouse_nodes == () for n in nodes)


def test_a_node_without_its_own_http_port_takes_the_configured_one_only_when_it_is_the_host_port_node() -> None:
    env = {"CITYOPS_CLICKHOUSE_HOST": "a", "CITYOPS_CLICKHOUSE_PORT": "9000", "CITYOPS_CLICKHOUSE_HTTP_PORT": "8124",
           "CITYOPS_CLICKHOUSE_NODES": "a:9000,b:9000"}
    assert [n.clickhouse_http_port for n in Settings.from_env(env).clickhouse_node_settings()] == [8124, None]
    off = Settings.from_env({**env, "CITYOPS_CLICKHOUSE_HTTP_PORT": "0"})
    assert [n.clickhouse_http_port for n in off.clickhouse_node_settings()] == [0, 0]


def test_the_host_port_node_comes_first_so_settings_pointed_elsewhere_write_there() -> None:
    s = Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": NODES, "CITYOPS_CLICKHOUSE_PORT": "24200"})
    assert [(n.clickhouse_port, n.clickhouse_http_port) for n in s.clickhouse_node_settings()] == [
        (24200, 24323), (24000, 24123), (24100, 24223)]
    other = Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": NODES, "CITYOPS_CLICKHOUSE_PORT": "19000"})
    assert [n.clickhouse_port for n in other.clickhouse_node_settings()] == [19000, 24000, 24100, 24200]


def test_a_child_does_not_take_the_node_list_of_its_parents_environment() -> None:
    """A worker started with single-node settings from a shell that has the cluster's list keeps to its node."""
    single = Settings.from_env({"CITYOPS_CLICKHOUSE_PORT": "26000"})
    child = Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": NODES, **single.to_env()})
    assert [n.clickhouse_port for n in child.clickhouse_node_settings()] == [26000]


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:x", ":9000", "a:1:2:3"])
def test_a_malformed_node_list_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="CITYOPS_CLICKHOUSE_NODES"):
        Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": f"127.0.0.1:9000,{bad}"})


@pytest.mark.parametrize("error", [ch_errors.NetworkError("Connection refused"), ConnectionRefusedError(111, "x"),
                                   ConnectionResetError(104, "reset"), EOFError("Unexpected EOF while reading"),
                                   ch_errors.SocketTimeoutError("timed out")])
def test_an_unreachable_node_is_left_for_the_next_one_and_the_switch_logged_once(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    sink, cluster = sink_on(three_nodes())
    first = cluster.nodes["127.0.0.1:24000"]
    first.errors = [error] * 3
    batch = small_batch()
    with caplog.at_level(logging.WARNING, logger="cityops.sink"):
        sink.write(batch)
        sink.write(batch)
    stored = sum(len(rows) for _, rows in batch_blocks(batch) if rows)
    assert cluster.rows() == {"24000": 0, "24100": 2 * stored, "24200": 0}
    assert sink.node == "127.0.0.1:24100" and sink.switches == 1 and sink.retries == 0
    switches = [r.getMessage() for r in caplog.records if "writing through" in r.getMessage()]
    assert switches == ["sink: ClickHouse node 127.0.0.1:24000 unreachable "
                        f"({type(error).__name__}); writing through 127.0.0.1:24100 (native)"]
    assert cluster.http_ports == [24123, 24223]


def test_a_node_that_answers_with_a_retryable_error_is_kept_and_backed_off() -> None:
    """A read-only table (ZooKeeper lost) or a missing quorum would be the same on every node: back off, stay."""
    sink, cluster = sink_on(three_nodes())
    cluster.nodes["127.0.0.1:24000"].errors = [ch_errors.ServerException("readonly", code=242),
                                              ch_errors.ServerException("quorum", code=285)]
    sink.write(small_batch())
    assert sink.switches == 0 and sink.retries == 2 and sink.node == "127.0.0.1:24000"
    assert cluster.rows()["24000"] > 0


def test_a_data_error_is_rejected_on_the_node_not_tried_elsewhere() -> None:
    sink, cluster = sink_on(three_nodes())
    cluster.nodes["127.0.0.1:24000"].errors = [ch_errors.ServerException("type mismatch", code=53)]
    with pytest.raises(SinkRejected):
        sink.write(small_batch())
    assert sink.switches == 0 and sum(cluster.rows().values()) == 0


def test_with_every_node_down_the_sink_backs_off_after_each_round_then_stores_where_one_answers() -> None:
    sink, cluster = sink_on(three_nodes())
    down = ch_errors.NetworkError("Connection refused")
    for name, n in (("127.0.0.1:24000", 3), ("127.0.0.1:24100", 3), ("127.0.0.1:24200", 2)):
        cluster.nodes[name].errors = [down] * n
    sink.write(small_batch())
    # rounds: 24000, 24100, 24200 all down (back off), again (back off), then 24000 down, 24100 down, 24200 up
    assert sink.retries == 2 and sink.switches == 8
    assert sink.node == "127.0.0.1:24200" and cluster.rows()["24200"] > 0
    assert cluster.rows()["24000"] == cluster.rows()["24100"] == 0


def test_one_node_is_retried_in_place_as_before() -> None:
    sink, cluster = sink_on(Settings.from_env({"CITYOPS_CLICKHOUSE_PORT": "24000"}))
    cluster.nodes["127.0.0.1:24000"].errors = [ch_errors.NetworkError("Connection refused")] * 2
    sink.write(small_batch())
    assert sink.switches == 0 and sink.retries == 2


def test_a_reader_may_connect_to_any_node_and_a_one_node_connection_only_to_its_own() -> None:
    from pipeline.sink.transport import ClickHouse

    s = three_nodes()
    reader, one = ClickHouse(s, any_node=True), ClickHouse(s)
    assert list(reader._client.connection.hosts) == [("127.0.0.1", 24000), ("127.0.0.1", 24100),
                                                     ("127.0.0.1", 24200)]
    assert list(one._client.connection.hosts) == [("127.0.0.1", 24000)]


def test_after_a_switch_the_transport_is_the_new_nodes(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on either node: the sink starts on the first one's HTTP port, moves to the second, which
    has no HTTP port (none given, none pairs with its native port), so over the native protocol, and back."""
    import socket
    import threading

    from pipeline.sink.sink import SinkStopped

    ports = []
    for _ in range(3):
        with socket.socket() as probe:          # ports that were free a moment ago: nothing listens there
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    s = Settings.from_env({"CITYOPS_CLICKHOUSE_NODES": f"127.0.0.1:{ports[0]}:{ports[1]},127.0.0.1:{ports[2]}",
                           "CITYOPS_CLICKHOUSE_PORT": str(ports[0])})
    sink = ClickHouseSink(s, backoff=Backoff(initial_s=0.05, cap_s=0.05))
    assert sink.transport == "http"
    threading.Timer(0.5, sink.stop).start()
    with caplog.at_level(logging.WARNING, logger="cityops.sink"), pytest.raises(SinkStopped):
        sink.write(small_batch())
    switches = [r.getMessage().split("writing through ")[1] for r in caplog.records
                if "writing through" in r.getMessage()]
    assert switches[:2] == [f"127.0.0.1:{ports[2]} (native)", f"127.0.0.1:{ports[0]} (http)"]
