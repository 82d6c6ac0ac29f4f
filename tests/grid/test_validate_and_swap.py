"""Grid validation names the offending cells, and a running worker only swaps to a valid grid."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from grid import CELLS_FILE
from grid.index import GridHolder
from grid.validate import validate_grid

_HEADER, _, _REST = CELLS_FILE.read_text(encoding="utf-8").partition('"features":[\n')
_FEATURES = [json.loads(line.rstrip(",")) for line in _REST.rsplit("\n]}", 1)[0].split("\n")]


def write_grid(path: Path, features: list[dict[str, Any]], edition: str | None = None) -> Path:
    """A grid file in the builder's layout (one feature per line), optionally with another edition."""
    header = _HEADER if edition is None else _HEADER.replace('"edition":"2025-01-15"', f'"edition":"{edition}"')
    body = ",\n".join(json.dumps(f, ensure_ascii=False, sort_keys=True, separators=(",", ":")) for f in features)
    path.write_text(header + '"features":[\n' + body + "\n]}\n", encoding="utf-8")
    return path


def _copy() -> list[dict[str, Any]]:
    return json.loads(json.dumps(_FEATURES))


def _whole(features: list[dict[str, Any]]) -> int:
    """Index of a whole-square cell with whole-square neighbours on all sides (an interior cell)."""
    squares = {(f["properties"]["col"], f["properties"]["row"]) for f in features
               if len(f["geometry"]["coordinates"][0]) == 5}
    for i, f in enumerate(features):
        c, r = f["properties"]["col"], f["properties"]["row"]
        if all((c + dc, r + dr) in squares for dc in (-1, 0, 1) for dr in (-1, 0, 1)):
            return i
    raise AssertionError("no interior cell")


def test_duplicate_codes_are_named(tmp_path: Path) -> None:
    """Two cells with one code: the code is named."""
    feats = _copy()
    feats[1]["properties"]["code"] = feats[0]["properties"]["code"]
    problems = validate_grid(write_grid(tmp_path / "g.geojson", feats))
    assert any(f"duplicate cell code {feats[0]['properties']['code']}" in p for p in problems)


def test_an_invalid_polygon_is_named_with_its_line(tmp_path: Path) -> None:
    """A self-intersecting (bow-tie) cell is reported with its line and GEOS's reason."""
    feats = _copy()
    i = _whole(feats)
    ring = feats[i]["geometry"]["coordinates"][0]
    ring[1], ring[2] = ring[2], ring[1]
    problems = validate_grid(write_grid(tmp_path / "g.geojson", feats))
    code = feats[i]["properties"]["code"]
    assert any(f":{i + 2}: cell {code}: invalid polygon: Self-intersection" in p for p in problems), problems


def test_overlapping_cells_are_named(tmp_path: Path) -> None:
    """A second cell on an occupied square overlaps it: both codes are named."""
    feats = _copy()
    i = _whole(feats)
    extra = json.loads(json.dumps(feats[i]))
    extra["properties"]["code"] = extra["properties"]["code"][:12] + "998"
    problems = validate_grid(write_grid(tmp_path / "g.geojson", feats + [extra]))
    a, b = sorted([feats[i]["properties"]["code"], extra["properties"]["code"]])
    assert any("overlap" in p and a in p and b in p for p in problems), problems


def test_a_gap_is_reported_with_the_cells_around_it(tmp_path: Path) -> None:
    """Removing an interior cell leaves a hole; the neighbours around it are named."""
    feats = _copy()
    i = _whole(feats)
    c, r = feats[i]["properties"]["col"], feats[i]["properties"]["row"]
    neighbour = next(f["properties"]["code"] for f in feats
                     if (f["properties"]["col"], f["properties"]["row"]) == (c + 1, r))
    del feats[i]
    problems = validate_grid(write_grid(tmp_path / "g.geojson", feats))
    assert any("gap in district" in p and neighbour in p for p in problems), problems


def test_a_cell_outside_its_lattice_square_is_named(tmp_path: Path) -> None:
    """A cell whose square index does not match its polygon is refused (the lookup relies on it)."""
    feats = _copy()
    feats[5]["properties"]["col"] += 3
    problems = validate_grid(write_grid(tmp_path / "g.geojson", feats))
    assert any(feats[5]["properties"]["code"] in p and "not within its lattice square" in p for p in problems)


def test_unreadable_files_name_the_file_and_line(tmp_path: Path) -> None:
    """Broken JSON and missing keys are reported with file, line and key."""
    bad = tmp_path / "broken.geojson"
    bad.write_text(CELLS_FILE.read_text(encoding="utf-8")[:5000], encoding="utf-8")
    [problem] = validate_grid(bad)
    assert str(bad) in problem and "not JSON" in problem
    feats = _copy()
    del feats[2]["properties"]["kind"]
    [problem] = validate_grid(write_grid(tmp_path / "g.geojson", feats))
    assert ":4: feature 2" in problem and "missing key 'kind'" in problem
    assert validate_grid(tmp_path / "missing.geojson")[0].endswith("cannot read: No such file or directory")


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_refused_swap_keeps_the_old_grid(tmp_path: Path) -> None:
    """An invalid new file is refused: reload returns False, the old index stays, last_error says why."""
    path = write_grid(tmp_path / "cells.geojson", _copy())
    holder = GridHolder(path)
    before = holder.current
    feats = _copy()
    feats[1]["properties"]["code"] = feats[0]["properties"]["code"]
    write_grid(path, feats)
    _bump_mtime(path)
    assert holder.maybe_reload() is False
    assert holder.current is before
    assert holder.last_error is not None and feats[0]["properties"]["code"] in holder.last_error
    assert holder.maybe_reload() is False  # unchanged since the refusal: not re-validated every call
    assert holder.current.locate(121.48, 31.27).grid_version == before.version


def test_a_valid_new_grid_is_swapped_in_and_versions_follow(tmp_path: Path) -> None:
    """A valid new edition replaces the old one; events located afterwards carry the new version."""
    path = write_grid(tmp_path / "cells.geojson", _copy())
    holder = GridHolder(path)
    old = holder.current.version
    assert holder.maybe_reload() is False  # nothing changed
    write_grid(path, _copy(), edition="2025-06-01")
    _bump_mtime(path)
    assert holder.maybe_reload() is True
    assert holder.last_error is None
    assert holder.current.version.startswith("2025-06-01.") and holder.current.version != old
    loc = holder.current.locate(121.4815, 31.279).location()
    assert loc is not None and loc.grid_version == holder.current.version


def test_version_is_stable_for_identical_files(tmp_path: Path) -> None:
    """Two byte-identical files have the same version; a changed byte changes it."""
    a = GridHolder(write_grid(tmp_path / "a.geojson", _copy())).current.version
    b = GridHolder(write_grid(tmp_path / "b.geojson", _copy())).current.version
    assert a == b == GridHolder(CELLS_FILE).current.version
    feats = _copy()
    feats[0]["properties"]["area_m2"] += 1
    assert GridHolder(write_grid(tmp_path / "c.geojson", feats)).current.version != a


def test_holder_refuses_to_start_on_an_invalid_grid(tmp_path: Path) -> None:
    """With no old grid to keep, an invalid file is an error at start."""
    feats = _copy()
    feats[1]["properties"]["code"] = feats[0]["properties"]["code"]
    with pytest.raises(ValueError, match="invalid grid"):
        GridHolder(write_grid(tmp_path / "g.geojson", feats))


def test_a_cached_index_answers_as_the_file_and_follows_its_bytes(tmp_path: Path) -> None:
    """A worker started again on the same grid file reads its validated index back from the cache (grid.cache):
    the same answers, prepared geometries included; a changed file misses the cache and is validated again,
    so an invalid one is still refused; a damaged entry is a miss."""
    cache = tmp_path / "cache"
    path = write_grid(tmp_path / "cells.geojson", _copy())
    first = GridHolder(path, cache_dir=cache).current
    entries = list(cache.glob("*.pickle"))
    assert len(entries) == 1
    again = GridHolder(path, cache_dir=cache).current
    assert again is not first and again.version == first.version and len(again) == len(first)
    lons = [121.4815, 121.49, 121.5, 121.47, 0.0, 121.52]
    lats = [31.279, 31.26, 31.27, 31.28, 0.0, 31.25]
    # repr: a point outside every cell has distance NaN, which equals nothing
    assert [repr(again.locate(x, y)) for x, y in zip(lons, lats, strict=True)] == \
        [repr(first.locate(x, y)) for x, y in zip(lons, lats, strict=True)]
    feats = _copy()
    feats[1]["properties"]["code"] = feats[0]["properties"]["code"]
    write_grid(path, feats)
    with pytest.raises(ValueError, match="invalid grid"):
        GridHolder(path, cache_dir=cache)
    assert list(cache.glob("*.pickle")) == entries          # an invalid file is never stored
    write_grid(path, _copy(), edition="2025-06-01")
    assert GridHolder(path, cache_dir=cache).current.version.startswith("2025-06-01.")
    assert len(list(cache.glob("*.pickle"))) == 2
    for entry in cache.glob("*.pickle"):
        entry.write_bytes(b"not a pickle")
    assert GridHolder(path, cache_dir=cache).current.version.startswith("2025-06-01.")


def test_a_reload_through_the_cache_still_refuses_and_swaps(tmp_path: Path) -> None:
    """With a cache, a running holder still keeps its grid for an invalid file and swaps for a valid one, also
    when that file's index was stored by another process before."""
    cache = tmp_path / "cache"
    path = write_grid(tmp_path / "cells.geojson", _copy())
    holder = GridHolder(path, cache_dir=cache)
    before = holder.current
    feats = _copy()
    feats[1]["properties"]["code"] = feats[0]["properties"]["code"]
    write_grid(path, feats)
    _bump_mtime(path)
    assert holder.maybe_reload() is False and holder.current is before
    write_grid(path, _copy(), edition="2025-06-01")
    GridHolder(path, cache_dir=cache)                       # another process stores the new edition's index
    _bump_mtime(path)
    assert holder.maybe_reload() is True
    assert holder.current.version.startswith("2025-06-01.")
    _bump_mtime(path)
    assert holder.maybe_reload() is False                   # the same version again: no swap
