"""One loaded world and one small simulated day, shared by the simulator's tests (they are read-only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.simulate import SimConfig, Simulation, simulate
from pipeline.simulate.world import World

# Fixed once per test run: two configs built on either side of midnight must still be the same config.
START = (datetime.now(UTC) - timedelta(days=3)).replace(hour=16, minute=0, second=0, microsecond=0)


def small_config(seed: int = 11, **changes: object) -> SimConfig:
    """A day of Hongkou at a tenth of the demo volume, ending well before now (the worker's time check)."""
    base: dict[str, object] = dict(days=1.0, start=START, sensors=300, hotline_per_day={"310109": 500},
                                   multi_source_per_day=6, patrol_reports_per_shift=5, seed=seed,
                                   malformed_share=0.02, sensor_incidents_per_1000=15.0)
    base.update(changes)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def sim(world: World) -> Simulation:
    return simulate(small_config(), world)


@pytest.fixture(scope="session")
def messages(sim: Simulation) -> list:  # type: ignore[type-arg]
    return list(sim.messages())
