"""Fixtures: a migrated database on either engine, loaded with a generated history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from pipeline.config import Settings
from tests.analytics.engines import ChdbDatabase
from tests.analytics.history import History, generate

_SESSION: Any = None


def chdb_session() -> Any:
    """One chdb session per test process (chdb keeps one engine per process)."""
    global _SESSION
    if _SESSION is None:
        from chdb import session

        _SESSION = session.Session()
    return _SESSION


@pytest.fixture
def chdb_db() -> Iterator[ChdbDatabase]:
    """A fresh, migrated database in the in-process current ClickHouse."""
    db = ChdbDatabase(chdb_session(), "cityops_" + uuid.uuid4().hex[:10])
    db.migrate()
    yield db
    db.execute(f"DROP DATABASE IF EXISTS {db.database}")


def history() -> History:
    """About 600 cases over two quarters of 2024 (UTC times), the same for every engine; 8 % are device
    faults, 5 % had their first report replaced by an earlier one processed late."""
    return generate(seed=7, n_cases=600, start=datetime(2024, 1, 1), days=182, device_faults=0.08, refirsts=0.05)


@pytest.fixture
def server_db(isolated_settings: Settings) -> Iterator[Any]:
    """A fresh, migrated database on the real server (marked tests only)."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.transport import ClickHouse

    migrate(isolated_settings)
    db = ClickHouse(isolated_settings)
    yield db
    db.close()
