"""`cityops grid build | validate FILE | locate LON LAT | info CODE | geocode ADDRESS`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from grid import AREAS_FILE, CELLS_FILE, DATA_DIR
from grid.build import DEFAULT_EDITION, DEFAULT_SOURCE_DIR, build_command
from grid.validate import validate_command


def register(subparsers: Any) -> None:
    """Add `cityops grid ...` to the top-level parser (pipeline.cli)."""
    grid = subparsers.add_parser("grid", help="the city grid: build, validate, locate points, inspect cells")
    sub = grid.add_subparsers(dest="grid_command", required=True, metavar="GRID_COMMAND")

    p = sub.add_parser("build", help="build grid/data/*.geojson from the district outlines")
    p.add_argument("--source", default=str(DEFAULT_SOURCE_DIR), help="input directory (default: %(default)s)")
    p.add_argument("--out", default=str(DATA_DIR), help="output directory (default: %(default)s)")
    p.add_argument("--edition", default=DEFAULT_EDITION, help="edition date, part of the version (%(default)s)")
    p.set_defaults(func=build_command)

    p = sub.add_parser("validate", help="check a grid file before a worker may swap to it")
    p.add_argument("file", help="the cells GeoJSON to check")
    p.set_defaults(func=validate_command)

    p = sub.add_parser("locate", help="which cell holds a WGS84 point")
    p.add_argument("lon", type=float)
    p.add_argument("lat", type=float)
    p.add_argument("--grid", default=str(CELLS_FILE), help="grid file (default: the shipped one)")
    p.add_argument("--tolerance", type=float, default=50.0, help="snapping tolerance in metres (%(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=locate_command)

    p = sub.add_parser("info", help="what a cell, management grid or sub-district code is")
    p.add_argument("code", help="15-digit cell, 12-digit grid, 9-digit sub-district or 6-digit district code")
    p.add_argument("--grid", default=str(CELLS_FILE), help="grid file (default: the shipped one)")
    p.set_defaults(func=info_command)

    p = sub.add_parser("geocode", help="resolve an address without coordinates with the gazetteer")
    p.add_argument("address")
    p.set_defaults(func=geocode_command)


def locate_command(args: argparse.Namespace) -> int:
    from grid.index import GridIndex

    index = GridIndex.load(Path(args.grid), snap_tolerance_m=args.tolerance)
    r = index.locate(args.lon, args.lat)
    out = {"lon": args.lon, "lat": args.lat, "cell": r.cell, "subdistrict": r.subdistrict,
           "grid_kind": r.grid_kind, "snapped": r.snapped, "distance_m": None if r.cell is None else
           round(r.distance_m, 2), "error": r.error, "grid_version": r.grid_version}
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    elif r.error:
        print(f"error: {r.error}")
    elif r.cell is None:
        print(f"outside: no cell within {args.tolerance:g} m of ({args.lon}, {args.lat})")
    else:
        names = _names()
        how = f"snapped {r.distance_m:.1f} m" if r.snapped else "inside"
        print(f"cell        {r.cell} ({how})\nsubdistrict {r.subdistrict} {names.get(r.subdistrict or '', '')}\n"
              f"grid        {r.cell[:12]} {names.get(r.cell[:12], '')}\ngrid kind   {r.grid_kind}\n"
              f"snapped     {'yes' if r.snapped else 'no'}\nversion     {r.grid_version}")
    return 0 if r.error is None else 2


def _areas() -> dict[str, dict[str, Any]]:
    doc = json.loads(AREAS_FILE.read_text(encoding="utf-8"))
    return {f["properties"]["code"]: f["properties"] for f in doc["features"]}


def _names() -> dict[str, str]:
    return {code: str(p.get("name", "")) for code, p in _areas().items()}


def info_command(args: argparse.Namespace) -> int:
    from grid.index import GridIndex

    code: str = args.code.strip()
    areas = _areas()
    if len(code) == 15:
        index = GridIndex.load(Path(args.grid))
        info = index.cell_info(code)
        if info is None:
            print(f"unknown cell code {code}")
            return 1
        cx, cy = index.cell_geometry(code).centroid.coords[0]  # type: ignore[union-attr]
        print(f"cell        {code} (lattice col {info['col']}, row {info['row']}, "
              f"{'whole square' if info['whole_square'] else 'clipped to the outline'})")
        print(f"centre      {cx:.7f}, {cy:.7f} (WGS84)")
        code_chain = [code[:12], code[:9], code[:6]]
    else:
        if code not in areas:
            print(f"unknown code {code}")
            return 1
        code_chain = [code[:n] for n in (12, 9, 6) if n <= len(code) and code[:n] in areas]
    for c in code_chain:
        p = areas.get(c)
        if p is None:
            continue
        extra = f", kind {p['kind']}" if "kind" in p else ""
        synthetic = " [synthetic polygon]" if p.get("synthetic") else ""
        print(f"{p['level']:<11} {c} {p['name']}{extra}: {p['cells']} cells, {p['area_m2'] / 1e6:.3f} km²{synthetic}")
    return 0


def geocode_command(args: argparse.Namespace) -> int:
    from grid.gazetteer import Gazetteer, Resolution

    gaz = Gazetteer.load()
    found = gaz.resolve_detail(args.address)
    print(gaz.explain(args.address))
    return 0 if isinstance(found, Resolution) else 1
