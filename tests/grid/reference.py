"""An independent brute-force reference for the grid lookup, written from the documented rule only.

It reads the grid file with plain `json`, tests every point against every cell with shapely `covers`, takes
the covering cell with the largest (col, row), and for uncovered points measures the distance to every cell in
metres (its own equirectangular projection around the file's `metric` reference point) and snaps to the
nearest within the tolerance, equally near cells again decided by the largest (col, row).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely


@dataclass(frozen=True)
class RefAnswer:
    cell: str | None
    snapped: bool
    distance_m: float


class BruteForceGrid:
    def __init__(self, path: Path, tolerance_m: float = 50.0) -> None:
        doc = json.loads(path.read_text(encoding="utf-8"))
        feats = doc["features"]
        self.codes = [f["properties"]["code"] for f in feats]
        self.keys = [(f["properties"]["col"], f["properties"]["row"]) for f in feats]
        self.geoms = np.array([shapely.geometry.shape(f["geometry"]) for f in feats])
        shapely.prepare(self.geoms)
        ref = doc["grid"]["metric"]
        self.ref_lon, self.ref_lat = ref["ref_lon"], ref["ref_lat"]
        r = 6371008.8
        self.kx = r * math.cos(self.ref_lat * math.pi / 180.0) * math.pi / 180.0
        self.ky = r * math.pi / 180.0
        self.projected = np.array([shapely.affinity.affine_transform(
            g, [self.kx, 0.0, 0.0, self.ky, -self.ref_lon * self.kx, -self.ref_lat * self.ky]) for g in self.geoms])
        self.tolerance_m = tolerance_m

    def answer(self, lon: float, lat: float) -> RefAnswer:
        covering = np.flatnonzero(shapely.covers(self.geoms, shapely.Point(lon, lat)))
        if len(covering):
            best = max(covering.tolist(), key=lambda i: self.keys[i])
            return RefAnswer(self.codes[best], False, 0.0)
        p = shapely.Point((lon - self.ref_lon) * self.kx, (lat - self.ref_lat) * self.ky)
        d = shapely.distance(self.projected, p)
        dmin = float(d.min())
        if dmin > self.tolerance_m:
            return RefAnswer(None, False, math.nan)
        nearest = np.flatnonzero(d <= dmin).tolist()
        best = max(nearest, key=lambda i: self.keys[i])
        return RefAnswer(self.codes[best], True, dmin)

    def distance_to(self, code: str, lon: float, lat: float) -> float:
        i = self.codes.index(code)
        p = shapely.Point((lon - self.ref_lon) * self.kx, (lat - self.ref_lat) * self.ky)
        return float(shapely.distance(self.projected[i], p))
