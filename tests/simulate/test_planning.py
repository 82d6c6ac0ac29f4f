"""The planner's shortcuts give the answers of the slow ways: the grid index's cells, every placed zone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.cases import CorrelationPolicy
from pipeline.simulate.plan import Block, Exclusion
from pipeline.simulate.world import World

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _index_spot(world: World, lon: float, lat: float) -> tuple[object, ...] | None:
    res = world.index.locate(lon, lat)
    loc = res.location()
    if loc is None or res.cell is None:
        return None
    return (res.cell, res.subdistrict, res.grid_kind, loc)


def test_locate_answers_as_the_grid_index_does(world: World) -> None:
    """Random points over the districts, on square edges and corners and outside them locate to the index's
    cell, sub-district, kind and location."""
    rng = random.Random(5)
    xs, ys = world.whole.lon_edges, world.whole.lat_edges
    points = [(rng.uniform(xs[0] - 0.002, xs[-1] + 0.002), rng.uniform(ys[0] - 0.002, ys[-1] + 0.002))
              for _ in range(3000)]
    points += [(rng.choice(xs), rng.uniform(ys[0], ys[-1])) for _ in range(500)]
    points += [(rng.uniform(xs[0], xs[-1]), rng.choice(ys)) for _ in range(500)]
    points += [(rng.choice(xs), rng.choice(ys)) for _ in range(500)]
    inside = whole = 0
    for lon, lat in points:
        spot = world.locate(lon, lat)
        got = None if spot is None else (spot.cell, spot.subdistrict, spot.grid_kind, spot.location)
        expected = _index_spot(world, lon, lat)
        assert got == expected, (lon, lat)
        inside += expected is not None
        whole += world.whole.cell_at(lon, lat) is not None
    assert whole > inside / 2, "the shortcut should answer for most points inside the districts"


def test_locate_of_a_point_in_a_clipped_square_asks_the_index(world: World) -> None:
    """A square that a cell covers only in part (a district edge) is not answered by the shortcut."""
    clipped = [c for d in world.districts.values() for c in d.cells
               if (c.col, c.row) not in world.whole.cells]
    assert clipped, "the shipped grid has cells clipped by district boundaries"
    p = clipped[0].geometry.representative_point()
    assert world.whole.cell_at(p.x, p.y) is None
    spot = world.locate(p.x, p.y)
    assert spot is not None and spot.cell == clipped[0].code


def _random_blocks(rng: random.Random, n: int) -> list[Block]:
    out = []
    for k in range(n):
        start = T0 + timedelta(hours=rng.uniform(0, 24 * 30))
        out.append(Block(rng.choice(("A", "B")), rng.choice(("E0501", "E0102")), 121.48 + rng.uniform(0, 0.01),
                         31.27 + rng.uniform(0, 0.01), start, start + timedelta(hours=rng.uniform(1, 24 * 9)),
                         f"I{k}"))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_retired_zones_still_block_questions_about_their_time(seed: int) -> None:
    """After `retire`, `free` answers every question, earlier or later, as it did before."""
    rng = random.Random(seed)
    blocks = _random_blocks(rng, 400)
    questions = []
    for _ in range(600):
        start = T0 + timedelta(hours=rng.uniform(-24, 24 * 32))
        questions.append((rng.choice(("A", "B")), rng.choice(("E0501", "E0102")), 121.48 + rng.uniform(0, 0.01),
                          31.27 + rng.uniform(0, 0.01), start, start + timedelta(hours=rng.uniform(1, 100))))
    plain, retiring = Exclusion(CorrelationPolicy()), Exclusion(CorrelationPolicy())
    for b in blocks:
        plain.add(b)
        retiring.add(b)
    expected = [plain.free(*q) for q in questions]
    for day in (5, 12, 11, 20, 33):
        retiring.retire(T0 + timedelta(days=day))
        assert [retiring.free(*q) for q in questions] == expected
    assert sum(map(len, retiring.retired.values())) > 0
    assert not any(b.end < T0 + timedelta(days=33) for bs in retiring.blocks.values() for b in bs)
    assert not all(expected) and any(expected)
