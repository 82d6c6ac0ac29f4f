"""The grid as the map page draws it: districts, sub-districts and cells with rounded coordinates.

Built once from the grid package's files (grid/data/cells.geojson and areas.geojson, or CITYOPS_GRID), so the map
works offline with no tiles. Coordinates are WGS84 rounded to 5 decimals (about 1 m), which keeps the payload
small; the browser draws them on a <canvas> and finds the clicked cell itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

Json = dict[str, Any]


def _rings(geometry: Json) -> list[list[list[float]]]:
    """The outer rings of a (Multi)Polygon, rounded (holes are not drawn: cells and areas have none)."""
    polys = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [[[round(x, 5), round(y, 5)] for x, y in poly[0]] for poly in polys]


def build_map(cells_file: Path, areas_file: Path) -> Json:
    """{"bbox", "districts", "subdistricts", "cells"}; cells are [code, subdistrict, kind, rings]."""
    cells_doc = orjson.loads(cells_file.read_bytes())
    areas_doc = orjson.loads(areas_file.read_bytes())
    cells = []
    xs: list[float] = []
    ys: list[float] = []
    for f in cells_doc["features"]:
        p = f["properties"]
        rings = _rings(f["geometry"])
        for ring in rings:
            xs += [pt[0] for pt in ring]
            ys += [pt[1] for pt in ring]
        cells.append([p["code"], p["subdistrict"], p["kind"], rings])
    districts, subdistricts = [], []
    for f in areas_doc["features"]:
        p = f["properties"]
        entry = {"code": p["code"], "name": p.get("name", p["code"]), "name_en": p.get("name_en", ""),
                 "synthetic": bool(p.get("synthetic", False)), "rings": _rings(f["geometry"])}
        if p.get("level") == "district":
            districts.append(entry)
        elif p.get("level") == "subdistrict":
            subdistricts.append(entry)
    bbox = [min(xs), min(ys), max(xs), max(ys)] if xs else [0.0, 0.0, 0.0, 0.0]
    return {"bbox": bbox, "grid": cells_doc.get("grid", {}).get("edition", ""), "districts": districts,
            "subdistricts": subdistricts, "cells": cells}


def subdistrict_names(map_json: Json) -> dict[str, str]:
    return {s["code"]: s["name"] for s in map_json["subdistricts"]}
