"""Bad points get a clear per-point error; the rest of the batch is answered; nothing is dropped."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.index import GridIndex

INSIDE = (121.4815, 31.279)  # North Sichuan Road, Hongkou


@pytest.mark.parametrize(("lon", "lat", "message"), [
    (math.nan, 31.2, "longitude is not a number"),
    (121.4, math.nan, "latitude is not a number"),
    (None, 31.2, "longitude is not a number"),
    (math.inf, 31.2, "longitude is infinite"),
    (31.279, 121.4815, "latitude out of range: 121.4815 (lat/lon swapped?)"),
    (121.4, 131.2, "latitude out of range: 131.2"),
    (200.0, 31.2, "longitude out of range: 200.0"),
])
def test_bad_points_get_a_reason(index: GridIndex, lon: float | None, lat: float, message: str) -> None:
    """Each kind of bad pair has its own sentence, and no cell."""
    r = index.locate(lon, lat)
    assert r.error == message and r.cell is None and r.location() is None


def test_a_batch_mixing_good_and_bad_points_answers_all(index: GridIndex) -> None:
    """Bad points do not stop the batch: good ones are located as if alone."""
    lons = np.array([INSIDE[0], np.nan, 31.27, INSIDE[0], 121.0])
    lats = np.array([INSIDE[1], 31.2, 121.48, INSIDE[1], 31.0])
    r = index.locate_batch(lons, lats)
    alone = index.locate(*INSIDE)
    assert list(r.cell) == [alone.cell, None, None, alone.cell, None]
    assert [e is None for e in r.error] == [True, False, False, True, True]
    assert r.errors.keys() == {1, 2}
    assert list(r.outside) == [False, False, False, False, True]  # 121.0, 31.0 is far away, not an error


def test_lengths_must_match(index: GridIndex) -> None:
    """Arrays of different length are a programming error, not a point error."""
    with pytest.raises(ValueError, match="differ in length"):
        index.locate_batch(np.zeros(3), np.zeros(2))


def test_empty_batch(index: GridIndex) -> None:
    """An empty batch gives an empty result."""
    r = index.locate_batch(np.array([]), np.array([]))
    assert len(r) == 0 and len(r.cell) == 0


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_pair_gets_an_answer_never_an_exception(index: GridIndex, lon: float, lat: float) -> None:
    """Whatever the floats, the answer is a cell, outside, or an error: exactly one of them."""
    r = index.locate(lon, lat)
    valid = math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90
    assert (r.error is None) == valid
    if r.error is not None:
        assert r.cell is None


def test_snapping_tolerance_is_configurable(index: GridIndex) -> None:
    """A point 30 m outside the outline snaps at 50 m tolerance, not at 10 m, and is outside at 0."""
    cell = index.cell_geometry(index.codes()[0])
    assert cell is not None
    # Walk west from the cell's westmost vertex until no cell covers the point, then 30 m further.
    x = min(cell.exterior.coords)[0] if cell.geom_type == "Polygon" else cell.bounds[0]
    y = [c for c in cell.exterior.coords if c[0] == x][0][1] if cell.geom_type == "Polygon" else cell.bounds[1]
    step = 1.0 / (111_195.0 * math.cos(math.radians(y)))
    k = 1
    while index.locate(x - k * step, y).distance_m == 0.0:
        k += 1
    point = (x - (k + 30) * step, y)
    default = index.locate(*point)
    assert default.snapped and 20.0 < default.distance_m <= 50.0
    strict = GridIndex.load(snap_tolerance_m=10.0).locate(*point)
    assert strict.cell is None and not strict.snapped and strict.error is None
    assert GridIndex.load(snap_tolerance_m=0.0).locate(*point).cell is None


def test_location_carries_the_grid_version(index: GridIndex) -> None:
    """The Location built for the pipeline names the grid version it was located with."""
    loc = index.locate(*INSIDE).location()
    assert loc is not None
    assert loc.grid_version == index.version and loc.cell is not None and loc.subdistrict == loc.cell[:9]
    assert loc.grid_kind in ("street", "residential", "village", "building")
