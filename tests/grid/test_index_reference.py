"""The batch lookup agrees with the brute-force shapely reference on every point, under the documented rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid import CELLS_FILE
from grid.index import GridIndex
from grid.lattice import Lattice
from tests.grid.reference import BruteForceGrid

_DOC = json.loads(CELLS_FILE.read_text(encoding="utf-8"))
_LATTICE = Lattice.from_json(_DOC["grid"]["lattice"])
_SQUARES = [(f["properties"]["col"], f["properties"]["row"]) for f in _DOC["features"]]


def _vertices(feature: dict) -> list[tuple[float, float]]:
    g = feature["geometry"]
    polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
    return [(x, y) for poly in polys for ring in poly for x, y in ring[:-1]]


_CLIPPED_VERTICES = [v for f in _DOC["features"] for v in _vertices(f) if len(_vertices(f)) != 4]
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BOX = (121.38, 31.09, 121.53, 31.33)


def assert_agrees(index: GridIndex, reference: BruteForceGrid, lons: list[float], lats: list[float]) -> None:
    result = index.locate_batch(np.array(lons), np.array(lats))
    for i, (lon, lat) in enumerate(zip(lons, lats, strict=True)):
        ref = reference.answer(lon, lat)
        got = (result.cell[i], bool(result.snapped[i]))
        if ref.snapped and abs(ref.distance_m - reference.tolerance_m) < 1e-6:
            continue  # exactly at the tolerance: either answer is within float noise of the rule
        if ref.snapped and got[1] and got[0] != ref.cell:
            # Equally near cells: ours must be as near as the reference's (ties decided within float noise).
            assert got[0] is not None
            assert reference.distance_to(got[0], lon, lat) == pytest.approx(ref.distance_m, abs=1e-6), (lon, lat)
            continue
        assert got == (ref.cell, ref.snapped), f"point ({lon!r}, {lat!r}): index {got}, reference {ref}"
        if ref.snapped:
            assert result.distance_m[i] == pytest.approx(ref.distance_m, abs=1e-6)


@_SETTINGS
@given(st.lists(st.tuples(st.floats(_BOX[0], _BOX[2]), st.floats(_BOX[1], _BOX[3])), min_size=1, max_size=8))
def test_random_points_agree_with_reference(index: GridIndex, reference: BruteForceGrid,
                                            points: list[tuple[float, float]]) -> None:
    """Uniform random points anywhere around both districts get the reference's answer."""
    assert_agrees(index, reference, [p[0] for p in points], [p[1] for p in points])


@st.composite
def lattice_edge_points(draw: st.DrawFn) -> tuple[float, float]:
    """A point exactly on a lattice line of some cell: west/east/south/north edge or a corner."""
    col, row = draw(st.sampled_from(_SQUARES))
    col += draw(st.sampled_from([0, 1]))
    row += draw(st.sampled_from([0, 1]))
    where = draw(st.sampled_from(["vertical", "horizontal", "corner"]))
    x0, y0, x1, y1 = _LATTICE.square(col, row)
    t = draw(st.floats(0.0, 1.0))
    if where == "vertical":
        return x0, y0 + (y1 - y0) * t
    if where == "horizontal":
        return x0 + (x1 - x0) * t, y0
    return x0, y0


@_SETTINGS
@given(st.lists(lattice_edge_points(), min_size=1, max_size=8))
def test_points_on_lattice_edges_and_vertices_agree(index: GridIndex, reference: BruteForceGrid,
                                                    points: list[tuple[float, float]]) -> None:
    """Points exactly on shared edges and corners get exactly one cell: east wins, then north."""
    assert_agrees(index, reference, [p[0] for p in points], [p[1] for p in points])


@st.composite
def outline_points(draw: st.DrawFn) -> tuple[float, float]:
    """A vertex of a clipped cell, a point on one of its edges, or one just outside (up to ~80 m away)."""
    i = draw(st.integers(0, len(_CLIPPED_VERTICES) - 2))
    (x, y), (x2, y2) = _CLIPPED_VERTICES[i], _CLIPPED_VERTICES[i + 1]
    kind = draw(st.sampled_from(["vertex", "edge", "offset"]))
    if kind == "vertex":
        return x, y
    if kind == "edge":
        t = draw(st.floats(0.0, 1.0))
        return x + (x2 - x) * t, y + (y2 - y) * t
    dist_m = draw(st.floats(0.0, 80.0))
    angle = draw(st.floats(0.0, 2 * math.pi))
    return (x + dist_m * math.cos(angle) / (111_195.0 * math.cos(math.radians(y))),
            y + dist_m * math.sin(angle) / 111_195.0)


@_SETTINGS
@given(st.lists(outline_points(), min_size=1, max_size=8))
def test_points_on_and_just_outside_the_outline_agree(index: GridIndex, reference: BruteForceGrid,
                                                      points: list[tuple[float, float]]) -> None:
    """Outline vertices, points on clipped edges and points just outside (snapped or not) agree."""
    assert_agrees(index, reference, [p[0] for p in points], [p[1] for p in points])


def test_a_shared_corner_of_four_whole_cells_goes_north_east(index: GridIndex) -> None:
    """Where four whole cells meet, the point belongs to the north-east one (half-open squares)."""
    squares = set(_SQUARES)
    whole = {(f["properties"]["col"], f["properties"]["row"]): f["properties"]["code"]
             for f in _DOC["features"] if len(_vertices(f)) == 4}
    corner = next((c, r) for (c, r) in sorted(whole)
                  if {(c - 1, r), (c, r - 1), (c - 1, r - 1)} <= set(whole) and (c, r) in squares)
    x, y = _LATTICE.lon_edge(corner[0]), _LATTICE.lat_edge(corner[1])
    assert index.locate(x, y).cell == whole[corner]


def test_every_cell_centre_finds_its_own_cell(index: GridIndex) -> None:
    """A point well inside each cell (its representative point) is located in that cell."""
    import shapely

    geoms = [shapely.geometry.shape(f["geometry"]) for f in _DOC["features"]]
    pts = [g.representative_point() for g in geoms]
    result = index.locate_batch(np.array([p.x for p in pts]), np.array([p.y for p in pts]))
    expected = [f["properties"]["code"] for f in _DOC["features"]]
    assert list(result.cell) == expected
    assert not result.snapped.any()
