"""One loaded world and one tiny simulated day for the benchmark's tests (read-only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.simulate import SimConfig, Simulation, simulate
from pipeline.simulate.world import World


def tiny_config(**changes: object) -> SimConfig:
    """Six hours of Hongkou with a few hundred sensors, ending days before now (the worker's time check)."""
    start = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    base: dict[str, object] = dict(days=0.25, start=start, sensors=200, hotline_per_day={"310109": 600},
                                   multi_source_per_day=8, patrol_reports_per_shift=4, seed=5,
                                   malformed_share=0.02, sensor_incidents_per_1000=40.0)
    base.update(changes)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def tiny_sim(world: World) -> Simulation:
    return simulate(tiny_config(), world)
