"""The edge measurement (issue #16): how many true duplicates a book edge splits, per grid and per sub-district."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.simulate.config import SimConfig
from pipeline.simulate.edges import EdgeSplits, main, measure
from pipeline.simulate.model import Incident, Report
from pipeline.simulate.world import World


def _report(world: World, lon: float, lat: float) -> Report:
    spot = world.locate(lon, lat)
    assert spot is not None
    return Report("patrol", datetime(2026, 1, 5, tzinfo=UTC), "patrol:x", "x", lon, lat, spot=spot)


def test_pairs_of_one_incident_are_counted_split_by_each_kind_of_edge(world: World) -> None:
    """Three reports make three pairs; a pair in two grids of one sub-district is split by the grid edge only."""
    district = world.districts["310109"]
    import random

    a, b = next(p for p in (district.edge_pair(random.Random(k), 30.0) for k in range(50)) if p)
    inc = Incident("I1", "310109", "E0102", "hotline", a,
                   [_report(world, a.lon, a.lat), _report(world, a.lon, a.lat), _report(world, b.lon, b.lat)])
    got = EdgeSplits()
    got.add(inc)
    assert (got.incidents, got.pairs, got.split_by_grid, got.split_by_subdistrict) == (1, 3, 2, 0)


def test_the_measurement_is_deterministic_and_sub_districts_split_fewer_pairs(world: World) -> None:
    """Two runs of one seed give the same figures; a sub-district edge splits no more pairs than a grid edge."""
    cfg = SimConfig(days=1.0, start=datetime(2026, 1, 4, 16, tzinfo=UTC), sensors=300, seed=4)
    one, two = measure(cfg, world), measure(cfg, world)
    assert one.to_json() == two.to_json()
    assert one.pairs > 100 and one.split_by_grid > 0 and one.split_by_subdistrict <= one.split_by_grid


def test_the_command_prints_both_shares(capsys) -> None:  # type: ignore[no-untyped-def]
    """`python -m pipeline.simulate.edges` prints the pairs and the two shares."""
    assert main(["--days", "0.5", "--sensors", "100", "--start", "2026-01-05"]) == 0
    out = capsys.readouterr().out
    assert "management grid" in out and "sub-district" in out and "pairs" in out
