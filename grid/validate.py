"""`cityops grid validate FILE`: is this grid file fit to replace the running one?

A file is acceptable when it parses as `cityops-grid/1` (`grid.gridfile`) and:
- every cell polygon is valid and non-empty (the reason and the cell are named);
- codes are 15 digits, unique, and consistent with the cell's district / sub-district / grid properties;
  every kind is one of street, residential, village, building, and one management grid has one kind;
- every cell lies within its own lattice square (`col`, `row`) inside the lattice window: this is what lets
  the lookup find a cell by arithmetic, and it also makes overlaps between different squares impossible;
- no two cells share a lattice square with overlapping area (overlap), and the cells of a district leave no
  hole inside their union (gap: a hole means an enclosed area no cell covers; the cells around it are named).

`validate_grid(path)` returns the problems as sentences (empty list = valid); the CLI prints them, and
`grid.index.GridHolder` refuses a file with any.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon

from grid.datum import LocalMetric
from grid.gridfile import GRID_KINDS, GridFile, GridFileError, read_grid_file

MAX_REPORTED = 50  # per kind of problem; a broken file can have thousands, and the first ones tell the story


def validate_grid(path: Path) -> list[str]:
    """Problems of the grid file at `path` as human-readable sentences naming the offending codes."""
    try:
        grid = read_grid_file(Path(path))
    except GridFileError as err:
        return [str(err)]
    return validate_parsed(grid)


def _capped(kind: str, items: list[str]) -> list[str]:
    if len(items) <= MAX_REPORTED:
        return items
    return items[:MAX_REPORTED] + [f"... and {len(items) - MAX_REPORTED} more {kind} problems"]


def validate_parsed(grid: GridFile) -> list[str]:
    """Problems of an already parsed grid file (see the module docstring for the rules)."""
    src, lat = grid.source, grid.lattice
    if not grid.cells:
        return [f"{src}: no cells"]
    codes: list[str] = []
    naming: list[str] = []
    for c in grid.cells:
        at = f"{src}:{c.line}" if c.line else src
        if len(c.code) != 15 or not c.code.isdigit():
            naming.append(f"{at}: cell code {c.code!r} is not 15 digits")
        elif (c.code[:6], c.code[:9], c.code[:12]) != (c.district, c.subdistrict, c.grid):
            naming.append(f"{at}: cell {c.code}: code does not match district/subdistrict/grid "
                          f"({c.district}/{c.subdistrict}/{c.grid})")
        if c.kind not in GRID_KINDS:
            naming.append(f"{at}: cell {c.code}: kind {c.kind!r} is not one of {', '.join(GRID_KINDS)}")
        codes.append(c.code)
    dup = sorted(code for code, n in Counter(codes).items() if n > 1)
    problems = _capped("naming", naming)
    problems += [f"{src}: duplicate cell code {code}" for code in dup[:MAX_REPORTED]]
    kinds: dict[str, set[str]] = defaultdict(set)
    for c in grid.cells:
        kinds[c.grid].add(c.kind)
    problems += [f"{src}: management grid {g} mixes kinds {sorted(k)}" for g, k in sorted(kinds.items()) if len(k) > 1]

    geoms = np.array([c.geometry for c in grid.cells])
    valid = shapely.is_valid(geoms)
    invalid = [f"{src}:{c.line}: cell {c.code}: invalid polygon: {shapely.is_valid_reason(c.geometry)}"
               for c, ok in zip(grid.cells, valid, strict=True) if not ok]
    empty = [f"{src}:{c.line}: cell {c.code}: empty polygon (no area)"
             for c, g in zip(grid.cells, geoms, strict=True) if g.is_empty or g.area <= 0]
    problems += _capped("invalid-polygon", invalid) + _capped("empty", empty)

    boxes = np.array([shapely.box(*lat.square(c.col, c.row)) for c in grid.cells])
    in_window = np.array([lat.col0 <= c.col < lat.col0 + lat.ncols and lat.row0 <= c.row < lat.row0 + lat.nrows
                          for c in grid.cells])
    within = shapely.covers(boxes, geoms) & in_window
    problems += _capped("lattice", [
        f"{src}:{c.line}: cell {c.code}: not within its lattice square (col {c.col}, row {c.row})"
        + ("" if inside else " which is outside the lattice window")
        for c, ok, inside in zip(grid.cells, within, in_window, strict=True) if not ok])

    ok_cells = [i for i in range(len(grid.cells)) if valid[i] and not empty_at(geoms[i])]
    problems += _capped("overlap", _overlaps(grid, ok_cells))
    problems += _capped("gap", _gaps(grid, ok_cells))
    return problems


def empty_at(geom: shapely.Geometry) -> bool:
    return bool(geom.is_empty or geom.area <= 0)


def _overlaps(grid: GridFile, idx: list[int]) -> list[str]:
    """Cells in the same lattice square whose interiors meet (cells in different squares cannot overlap)."""
    by_square: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in idx:
        by_square[(grid.cells[i].col, grid.cells[i].row)].append(i)
    out = []
    for sq, members in sorted(by_square.items()):
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1:]:
                ca, cb = grid.cells[a], grid.cells[b]
                if shapely.intersection(ca.geometry, cb.geometry).area > 0:
                    out.append(f"{grid.source}: cells {ca.code} and {cb.code} overlap (square {sq[0]},{sq[1]})")
    return out


def _gaps(grid: GridFile, idx: list[int]) -> list[str]:
    """Holes inside the union of each district's cells, with the cells around each hole."""
    out: list[str] = []
    metric = LocalMetric(*grid.metric_ref)
    m2_per_deg2 = metric.m_per_deg_lon * metric.m_per_deg_lat
    by_district: dict[str, list[int]] = defaultdict(list)
    for i in idx:
        by_district[grid.cells[i].district].append(i)
    for district, members in sorted(by_district.items()):
        geoms = np.array([grid.cells[i].geometry for i in members])
        union = shapely.union_all(geoms)
        holes = [Polygon(r) for p in getattr(union, "geoms", [union]) for r in getattr(p, "interiors", [])]
        tree = shapely.STRtree(geoms)
        for hole in holes:
            around = sorted(grid.cells[members[j]].code for j in tree.query(hole, predicate="touches"))
            pt = hole.representative_point()
            out.append(f"{grid.source}: gap in district {district} near ({pt.x:.6f}, {pt.y:.6f}), "
                       f"about {hole.area * m2_per_deg2:.0f} m², between cells {', '.join(around[:8])}"
                       + (" ..." if len(around) > 8 else ""))
    return out


def validate_command(args: argparse.Namespace) -> int:
    """`cityops grid validate FILE`: prints OK or the problems; exit status 0 when valid, 1 when not."""
    problems = validate_grid(Path(args.file))
    if problems:
        print(f"{args.file}: INVALID ({len(problems)} problems)")
        for p in problems:
            print(f"  - {p}")
        return 1
    grid = read_grid_file(Path(args.file))
    print(f"{args.file}: OK, {len(grid.cells)} cells, version {grid.version}")
    return 0
