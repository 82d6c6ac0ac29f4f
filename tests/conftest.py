"""Shared test setup.

Unit tests are the default. A test that needs the real broker or server is marked `kafka` or `clickhouse`
and talks to the ones `make test` started (deploy/local). An unmarked test that tries to reach either fails
at once: the guard below refuses connections to their ports.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from pipeline.config import Settings

_SETTINGS = Settings.from_env()


def _service_ports() -> set[int]:
    ports = {_SETTINGS.clickhouse_port, 18123, 19093}
    for hostport in _SETTINGS.kafka_bootstrap.split(","):
        ports.add(int(hostport.rsplit(":", 1)[1]))
    return ports


_BLOCKED = _service_ports()
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class ServiceAccessError(AssertionError):
    """An unmarked (unit) test tried to reach Kafka or ClickHouse."""


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in _BLOCKED:
            raise ServiceAccessError(
                f"unit test tried to reach {address[0]}:{address[1]}; mark it with "
                "@pytest.mark.kafka or @pytest.mark.clickhouse"
            )
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _block_services_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    marks = {m.name for m in request.node.iter_markers()}
    if not marks & {"kafka", "clickhouse", "cluster"}:
        monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
        monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture
def settings() -> Settings:
    """Settings of the local stack, as the worker would read them."""
    return _SETTINGS


@pytest.fixture
def isolated_settings(tmp_path: Any) -> Iterator[Settings]:
    """Settings with a ClickHouse database, Kafka topic names and a consumer group of the test's own.

    Tests never share state: each gets `cityops_t<random>` and topics prefixed the same way; the
    database is dropped afterwards (topics are left; they are small and uniquely named).
    """
    from pipeline.config import Topics

    tag = "t" + uuid.uuid4().hex[:10]
    s = replace(_SETTINGS, clickhouse_database=f"cityops_{tag}", topic_prefix=tag, topics=Topics.with_prefix(tag),
                app_id=f"cityops-{tag}", var_dir=tmp_path)
    yield s
    try:
        from clickhouse_driver import Client

        Client(host=s.clickhouse_host, port=s.clickhouse_port, user=s.clickhouse_user,
               password=s.clickhouse_password).execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
    except Exception:  # the server may be down on purpose (outage tests); nothing to drop then
        pass
