"""Where a case is, in words a duty officer reads on a phone: the sub-district's name and the nearest address
of the gazetteer (grid/gazetteer.py), e.g. "北外滩街道 · 东大名路1000号附近".

The gazetteer turns addresses into points; this is the reverse: every road line is walked in 10 m steps with
its house number interpolated along it (as the gazetteer places a number), every named place is a point, and the
nearest of all within `max_m` names the spot. Beyond that (a point in a block far from any known road) only the
sub-district is given: a wrong street name would send a crew to the wrong place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from grid import AREAS_FILE
from grid.gazetteer import Gazetteer

M_PER_DEG = 111_195.0


def subdistrict_names(areas_file: Path = AREAS_FILE) -> dict[str, str]:
    """Sub-district code -> its Chinese name, from the grid's areas file."""
    doc = orjson.loads(areas_file.read_bytes())
    return {str(f["properties"]["code"]): str(f["properties"].get("name", f["properties"]["code"]))
            for f in doc["features"] if f["properties"].get("level") == "subdistrict"}


@dataclass(frozen=True)
class Spot:
    """The nearest gazetteer address of a point and how far it is."""

    text: str
    distance_m: float


class Places:
    """Sub-district names and the reverse gazetteer (built once; lookups are one vectorised pass)."""

    def __init__(self, gazetteer: Gazetteer, names: dict[str, str], max_m: float = 400.0) -> None:
        self.names = names
        self.max_m = max_m
        labels: list[str] = []
        lons: list[float] = []
        lats: list[float] = []
        for road in gazetteer.roads:
            lo, hi = road.numbers
            for (lon, lat), fraction in _walk(road.line):
                labels.append(f"{road.name}{round(lo + fraction * (hi - lo))}号附近")
                lons.append(lon)
                lats.append(lat)
        for place in gazetteer.places:
            labels.append(f"{place.name}附近")
            lons.append(place.point[0])
            lats.append(place.point[1])
        self._labels = labels
        self._lon = np.asarray(lons, dtype=np.float64)
        self._lat = np.asarray(lats, dtype=np.float64)

    @classmethod
    def load(cls) -> Places:
        return cls(Gazetteer.load(), subdistrict_names())

    def nearest(self, lon: float | None, lat: float | None) -> Spot | None:
        """The nearest known address within `max_m`, or None (no position, or nothing near)."""
        if lon is None or lat is None or not self._labels or not (math.isfinite(lon) and math.isfinite(lat)):
            return None
        k = math.cos(math.radians(lat))
        d2 = ((self._lon - lon) * k) ** 2 + (self._lat - lat) ** 2
        i = int(np.argmin(d2))
        metres = math.sqrt(float(d2[i])) * M_PER_DEG
        return Spot(self._labels[i], metres) if metres <= self.max_m else None

    def subdistrict(self, code: str) -> str:
        return self.names.get(code, code)

    def describe(self, subdistrict: str, lon: float | None, lat: float | None) -> str:
        """"<sub-district> · <nearest address>", or the sub-district alone, or "" when neither is known."""
        name = self.subdistrict(subdistrict) if subdistrict else ""
        spot = self.nearest(lon, lat)
        return " · ".join(p for p in (name, spot.text if spot else "") if p)


def _walk(line: tuple[tuple[float, float], ...], step_m: float = 10.0) -> list[tuple[tuple[float, float], float]]:
    """Points every `step_m` along a line with the fraction of its length at each (metres, not degrees)."""
    seg = [_metres(p, q) for p, q in zip(line, line[1:], strict=False)]
    total = sum(seg) or 1.0
    out: list[tuple[tuple[float, float], float]] = []
    done = 0.0
    for (p, q), length in zip(zip(line, line[1:], strict=False), seg, strict=True):
        n = max(1, int(length / step_m))
        for i in range(n):
            t = i / n
            out.append(((p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t), (done + t * length) / total))
        done += length
    out.append((line[-1], 1.0))
    return out


def _metres(p: tuple[float, float], q: tuple[float, float]) -> float:
    k = math.cos(math.radians((p[1] + q[1]) / 2))
    return math.hypot((p[0] - q[0]) * k, p[1] - q[1]) * M_PER_DEG
