"""`cityops grid build`: the committed data is the build's output, byte for byte, and has the promised shape."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import shapely

from grid import AREAS_FILE, CELLS_FILE
from grid.build import DEFAULT_SOURCE_DIR, BuildError, build, read_subdistricts
from grid.validate import validate_grid


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid")
    build(DEFAULT_SOURCE_DIR, out / "cells.geojson", out / "areas.geojson")
    return out


def test_build_reproduces_the_committed_files_byte_for_byte(built: Path) -> None:
    """Same inputs, same bytes: the shipped grid/data is exactly what the build makes."""
    assert (built / "cells.geojson").read_bytes() == CELLS_FILE.read_bytes()
    assert (built / "areas.geojson").read_bytes() == AREAS_FILE.read_bytes()


def test_shipped_grid_is_valid() -> None:
    """The shipped cells pass the validator a running worker applies before a swap."""
    assert validate_grid(CELLS_FILE) == []


def _areas() -> list[dict]:
    return [f["properties"] for f in json.loads(AREAS_FILE.read_text(encoding="utf-8"))["features"]]


def test_districts_have_the_official_subdistricts_and_real_areas() -> None:
    """8 sub-districts in Hongkou, 14 in Xuhui, with official codes; areas ≈ 23.5 and 55.1 km²."""
    props = _areas()
    subs = Counter(p["parent"] for p in props if p["level"] == "subdistrict")
    assert subs == {"310109": 8, "310104": 14}
    official = {s.code for s in read_subdistricts(DEFAULT_SOURCE_DIR / "subdistricts_hongkou_xuhui.csv")}
    assert {p["code"] for p in props if p["level"] == "subdistrict"} == official
    area = {p["code"]: p["area_m2"] / 1e6 for p in props if p["level"] == "district"}
    assert area["310109"] == pytest.approx(23.5, rel=0.02)
    assert area["310104"] == pytest.approx(55.1, rel=0.02)
    assert all(p["synthetic"] for p in props if p["level"] in ("subdistrict", "grid"))
    assert not any(p["synthetic"] for p in props if p["level"] == "district")


def test_cells_are_about_ten_thousand_square_metres_and_codes_are_15_digits() -> None:
    """Whole cells measure 10,000 m² ± 1% (great-circle check); codes nest district/sub-district/grid."""
    doc = json.loads(CELLS_FILE.read_text(encoding="utf-8"))
    for f in doc["features"][::97]:
        p = f["properties"]
        assert len(p["code"]) == 15 and p["code"].isdigit()
        assert p["code"].startswith(p["grid"]) and p["grid"].startswith(p["subdistrict"])
        assert p["subdistrict"].startswith(p["district"])
        g = shapely.geometry.shape(f["geometry"])
        x0, y0, x1, y1 = g.bounds
        if len(g.exterior.coords) == 5 if g.geom_type == "Polygon" else False:
            # Independent of the build's metric: spherical-earth rectangle area.
            r = 6371008.8
            exact = r * r * math.radians(x1 - x0) * (math.sin(math.radians(y1)) - math.sin(math.radians(y0)))
            if abs(g.area - (x1 - x0) * (y1 - y0)) < 1e-15:
                assert exact == pytest.approx(10_000, rel=0.01)
                assert p["area_m2"] == pytest.approx(exact, rel=0.005)
    kinds = Counter(f["properties"]["kind"] for f in doc["features"])
    assert set(kinds) == {"street", "residential", "village", "building"}


def test_subdistrict_sizes_follow_their_residents_committees() -> None:
    """Sub-district cell counts are proportional to their weight (committees, floored) within a few cells."""
    props = [p for p in _areas() if p["level"] == "subdistrict"]
    for district in ("310109", "310104"):
        subs = [p for p in props if p["parent"] == district]
        weights = {p["code"]: max(p["n_juweihui"], 10) for p in subs}
        total_cells = sum(p["cells"] for p in subs)
        for p in subs:
            share = total_cells * weights[p["code"]] / sum(weights.values())
            assert abs(p["cells"] - share) <= 2


def test_a_bad_subdistrict_row_names_file_line_and_column(tmp_path: Path) -> None:
    """A broken input row is refused with the file, line and column."""
    src = tmp_path / "data"
    src.mkdir()
    for f in DEFAULT_SOURCE_DIR.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    lines = (src / "subdistricts_hongkou_xuhui.csv").read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",many"
    (src / "subdistricts_hongkou_xuhui.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BuildError, match=r"subdistricts_hongkou_xuhui.csv:4: n_juweihui 'many'"):
        build(src, tmp_path / "c.geojson", tmp_path / "a.geojson")
