"""Shared, read-only grid fixtures (loading the shipped grid takes about two seconds, so once per session)."""

from __future__ import annotations

import pytest

from grid import CELLS_FILE
from grid.gazetteer import Gazetteer
from grid.index import GridIndex
from tests.grid.reference import BruteForceGrid


@pytest.fixture(scope="session")
def index() -> GridIndex:
    return GridIndex.load()


@pytest.fixture(scope="session")
def reference() -> BruteForceGrid:
    return BruteForceGrid(CELLS_FILE)


@pytest.fixture(scope="session")
def gazetteer() -> Gazetteer:
    return Gazetteer.load()
