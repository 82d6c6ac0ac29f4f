"""The planner's shortcuts give the answers of the slow ways: the grid index's cells, every placed zone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.cases import CorrelationPolicy, distance_m
from pipeline.simulate import simulate
from pipeline.simulate.model import Incident
from pipeline.simulate.plan import Block, Exclusion
from pipeline.simulate.world import World
from tests.simulate.conftest import small_config

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


def test_no_incident_starts_where_the_worker_would_still_reopen_an_earlier_one(world: World) -> None:
    """The worker joins a report to a case of its category nearby while the case is open, and reopens a
    handled one until `reopen_days` after it ended: at its closing (the verify), else its resolve. An incident
    planned inside that reach would be merged into the earlier one, and the truth would count two cases where the
    worker counts one. Checked independently of the planner, over twelve days (reopen windows span days)."""
    policy = CorrelationPolicy()
    start = (datetime.now(UTC) - timedelta(days=14)).replace(hour=16, minute=0, second=0, microsecond=0)
    sim = simulate(small_config(seed=5, days=12.0, start=start, sensors=100, hotline_per_day={"310109": 300}), world)
    by_place: dict[tuple[str, str], list[Incident]] = {}
    for inc in sim.truth.incidents:
        by_place.setdefault((inc.spot.key, inc.category), []).append(inc)
    pairs = 0
    for incidents in by_place.values():
        incidents.sort(key=lambda i: i.first.at)
        for k, later in enumerate(incidents):
            for earlier in incidents[:k]:
                radius, window = policy.for_category(earlier.category)
                if earlier.hotspot is not None and earlier.hotspot == later.hotspot:
                    continue        # a hot spot's returns are planned apart on purpose (their own test)
                if distance_m(earlier.spot.lon, earlier.spot.lat, later.spot.lon, later.spot.lat) > radius:
                    continue
                pairs += 1
                ended = [a.at for a in earlier.actions if a.action in ("resolve", "verify")]
                reach = (max(ended) + timedelta(days=policy.reopen_days) if ended
                         else earlier.reports[-1].at + window)
                assert later.first.at > reach, (earlier.incident_id, later.incident_id, later.first.at, reach)
    assert pairs > 0        # the check saw incidents at the same place
