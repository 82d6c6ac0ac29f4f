"""Addresses without coordinates (common in 12345 tickets) → WGS84 points, from grid/data/gazetteer.yaml.

Understood forms (after NFKC normalisation, so full-width digits work, and without spaces):
- a road and a house or lane number: "虹口区四川北路1500号", "四川北路1500弄3号" (the lane number places it),
  "上海市徐汇区衡山路 811 号"; the number is interpolated along the road between its known number range;
- a named place, optionally with an entrance: "鲁迅公园东门", "徐家汇公园" (longest name wins, so
  "多伦路文化名人街" is the place, not the road);
- a crossing of two roads: "四川北路海宁路口", "天钥桥路与中山南二路交叉口".
A road without a number, an unknown name, a number outside the road's range, or a district in the address
that contradicts the match cannot be placed: `resolve` returns None and `explain` says why; the pipeline then
sends the event to the "unlocated" queue for the operations centre (`grid.locate`).

The file's positions are approximate (it says so itself); `Resolution.accuracy_m` carries that on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grid import GAZETTEER_FILE
from grid.datum import gcj02_to_wgs84
from pipeline.model.yamlfile import load_with_lines

DISTRICT_NAMES = {"虹口区": "310109", "徐汇区": "310104", "虹口": "310109", "徐汇": "310104"}
ENTRANCE_WORDS = ("东门", "南门", "西门", "北门", "正门", "大门", "主入口")
_PREFIXES = ("中华人民共和国", "中国", "上海市", "上海")
_NUMBER = re.compile(r"^(\d{1,5})(?:[-~至到]\d{1,5})?(号|弄|支弄|号楼)?")
_CROSSING = re.compile(r"(交叉口|路口|口|交界处|交汇处)")
_MAX_CROSSING_GAP_M = 250.0  # approximate lines may miss each other by this much at a real crossing


class GazetteerError(ValueError):
    """A gazetteer file that cannot be loaded; the message names the file, line and key."""


@dataclass(frozen=True, slots=True)
class Road:
    """A named road: its line (WGS84, first point = numbers[0]) and the house-number range along it."""

    name: str
    district: str
    aliases: tuple[str, ...]
    numbers: tuple[int, int]
    line: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Place:
    """A named place (park, station, landmark) with optional named entrances (WGS84)."""

    name: str
    district: str
    aliases: tuple[str, ...]
    point: tuple[float, float]
    entrances: tuple[tuple[str, tuple[float, float]], ...]


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where an address was placed and how: method is house_number, place, entrance or crossing."""

    lon: float
    lat: float
    method: str
    matched: str
    district: str
    accuracy_m: float


def _pair(v: Any, where: str, key: str) -> tuple[float, float]:
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)):
        raise GazetteerError(f"{where}: key {key!r} must be [lon, lat], got {v!r}")
    return float(v[0]), float(v[1])


def _convert(points: list[tuple[float, float]], datum: str) -> tuple[tuple[float, float], ...]:
    arr = np.array(points, dtype=np.float64)
    if datum == "GCJ-02":
        lon, lat = gcj02_to_wgs84(arr[:, 0], arr[:, 1])
        arr = np.column_stack([lon, lat])
    return tuple((round(float(x), 7), round(float(y), 7)) for x, y in arr)


def _check_keys(entry: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise GazetteerError(f"{where}: expected a mapping, got {entry!r}")
    keys = set(entry) - {"__line__"}
    unknown = keys - required - optional
    if unknown:
        raise GazetteerError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    missing = required - keys
    if missing:
        raise GazetteerError(f"{where}: missing key {sorted(missing)[0]!r}")
    return entry


class Gazetteer:
    """Road and place names of the shipped districts, and the address matcher over them."""

    def __init__(self, roads: tuple[Road, ...], places: tuple[Place, ...], accuracy_m: float) -> None:
        self.roads = roads
        self.places = places
        self.accuracy_m = accuracy_m
        self._road_names = sorted(((n, r) for r in roads for n in (r.name, *r.aliases)),
                                  key=lambda nr: -len(nr[0]))
        self._place_names = sorted(((n, p) for p in places for n in (p.name, *p.aliases)),
                                   key=lambda np_: -len(np_[0]))

    @classmethod
    def load(cls, path: Path | None = None) -> Gazetteer:
        """Load and check a gazetteer file (default: grid/data/gazetteer.yaml); GazetteerError when bad."""
        path = Path(path) if path is not None else GAZETTEER_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise GazetteerError(f"{path}: cannot read: {err.strerror}") from None
        doc = load_with_lines(text, str(path), GazetteerError)
        top = _check_keys(doc, f"{path}:1", {"version", "datum", "roads", "places"}, {"accuracy_m"})
        if top["version"] != 1:
            raise GazetteerError(f"{path}:1: key 'version' must be 1, got {top['version']!r}")
        datum = top["datum"]
        if datum not in ("GCJ-02", "WGS84"):
            raise GazetteerError(f"{path}:1: key 'datum' must be GCJ-02 or WGS84, got {datum!r}")
        roads, places = [], []
        for entry in top["roads"] or []:
            where = f"{path}:{entry.get('__line__', '?') if isinstance(entry, dict) else '?'}: road"
            e = _check_keys(entry, where, {"name", "district", "numbers", "line"}, {"aliases"})
            nums = e["numbers"]
            if (not isinstance(nums, list) or len(nums) != 2 or not all(isinstance(n, int) for n in nums)
                    or nums[0] >= nums[1]):
                raise GazetteerError(f"{where} {e['name']}: key 'numbers' must be [low, high], got {nums!r}")
            if not isinstance(e["line"], list) or len(e["line"]) < 2:
                raise GazetteerError(f"{where} {e['name']}: key 'line' needs at least two points")
            points = _convert([_pair(p, f"{where} {e['name']}", "line") for p in e["line"]], datum)
            roads.append(Road(str(e["name"]), str(e["district"]), tuple(e.get("aliases") or ()),
                              (nums[0], nums[1]), points))
        for entry in top["places"] or []:
            where = f"{path}:{entry.get('__line__', '?') if isinstance(entry, dict) else '?'}: place"
            e = _check_keys(entry, where, {"name", "district", "point"}, {"aliases", "entrances"})
            ents = e.get("entrances") or {}
            names = [k for k in ents if k != "__line__"]
            pts = _convert([_pair(e["point"], where, "point")]
                           + [_pair(ents[k], where, f"entrances.{k}") for k in names], datum)
            places.append(Place(str(e["name"]), str(e["district"]), tuple(e.get("aliases") or ()), pts[0],
                                tuple(zip(names, pts[1:], strict=True))))
        return cls(tuple(roads), tuple(places), float(top.get("accuracy_m", 300)))

    def resolve(self, address: str) -> tuple[float, float] | None:
        """WGS84 (lon, lat) for an address, or None when it cannot be placed (see `explain`)."""
        found = self.resolve_detail(address)
        return (found.lon, found.lat) if isinstance(found, Resolution) else None

    def explain(self, address: str) -> str:
        """Why an address resolves or not, as one sentence (for the unlocated queue and the CLI)."""
        found = self.resolve_detail(address)
        if isinstance(found, Resolution):
            return f"{found.method}: {found.matched} ({found.lon:.6f}, {found.lat:.6f}), ±{found.accuracy_m:.0f} m"
        return found

    def resolve_detail(self, address: str) -> Resolution | str:
        """A Resolution, or the reason (a sentence) why the address cannot be placed."""
        text = normalize_address(address)
        if not text:
            return "empty address"
        stated = None
        for name, code in DISTRICT_NAMES.items():
            if name in text:
                stated = code
                break
        found = self._match_place(text) or self._match_roads(text)
        if isinstance(found, Resolution) and stated is not None and found.district != stated:
            return f"{found.matched} is not in the district named in the address ({stated})"
        return found if found is not None else f"no known road or place in {address!r}"

    def _match_place(self, text: str) -> Resolution | None:
        for name, place in self._place_names:
            pos = text.find(name)
            if pos < 0:
                continue
            rest = text[pos + len(name):]
            for ent, pt in place.entrances:
                if rest.startswith(ent):
                    return Resolution(pt[0], pt[1], "entrance", f"{place.name}{ent}", place.district,
                                      self.accuracy_m)
            return Resolution(place.point[0], place.point[1], "place", place.name, place.district,
                              self.accuracy_m)
        return None

    def _match_roads(self, text: str) -> Resolution | str | None:
        hits: list[tuple[int, str, Road]] = []
        taken: list[tuple[int, int]] = []
        for name, road in self._road_names:  # longest names first, non-overlapping occurrences
            pos = text.find(name)
            while pos >= 0:
                if all(pos + len(name) <= a or pos >= b for a, b in taken) and road not in [h[2] for h in hits]:
                    hits.append((pos, name, road))
                    taken.append((pos, pos + len(name)))
                pos = text.find(name, pos + 1)
        if not hits:
            return None
        hits.sort(key=lambda h: h[0])
        pos, name, road = hits[0]
        rest = text[pos + len(name):]
        m = _NUMBER.match(rest)
        if m:
            return self._house_number(road, int(m.group(1)))
        if len(hits) >= 2 and _CROSSING.search(text):
            return self._crossing(road, hits[1][2])
        return f"{road.name} without a house number is too vague to place"

    def _house_number(self, road: Road, number: int) -> Resolution | str:
        lo, hi = road.numbers
        if not lo <= number <= hi:
            return f"house number {number} is outside the known range {lo}-{hi} of {road.name}"
        lon, lat = _along(road.line, (number - lo) / (hi - lo))
        return Resolution(lon, lat, "house_number", f"{road.name}{number}号", road.district, self.accuracy_m)

    def _crossing(self, a: Road, b: Road) -> Resolution | str:
        best: tuple[float, float, float] | None = None
        for p in _densify(a.line):
            for q in _densify(b.line):
                d = _metres(p, q)
                if best is None or d < best[0]:
                    best = (d, (p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
        assert best is not None
        if best[0] > _MAX_CROSSING_GAP_M:
            return f"{a.name} and {b.name} do not cross (nearest {best[0]:.0f} m apart)"
        return Resolution(round(best[1], 7), round(best[2], 7), "crossing", f"{a.name}/{b.name}", a.district,
                          self.accuracy_m)


def normalize_address(address: str) -> str:
    """NFKC (full-width → ASCII), no whitespace, no leading country/city prefix."""
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", address or ""))
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def _metres(p: tuple[float, float], q: tuple[float, float]) -> float:
    k = math.cos(math.radians((p[1] + q[1]) / 2))
    return math.hypot((p[0] - q[0]) * k, p[1] - q[1]) * 111_195.0


def _densify(line: tuple[tuple[float, float], ...], step_m: float = 10.0) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for p, q in zip(line, line[1:], strict=False):
        n = max(1, int(_metres(p, q) / step_m))
        out += [(p[0] + (q[0] - p[0]) * i / n, p[1] + (q[1] - p[1]) * i / n) for i in range(n)]
    return out + [line[-1]]


def _along(line: tuple[tuple[float, float], ...], fraction: float) -> tuple[float, float]:
    """The point at `fraction` (0..1) of the line's length (lengths in metres, not degrees)."""
    seg = [_metres(p, q) for p, q in zip(line, line[1:], strict=False)]
    target = fraction * sum(seg)
    for (p, q), length in zip(zip(line, line[1:], strict=False), seg, strict=True):
        if target <= length or length == 0 and target <= 0:
            t = target / length if length else 0.0
            return round(p[0] + (q[0] - p[0]) * t, 7), round(p[1] + (q[1] - p[1]) * t, 7)
        target -= length
    return line[-1]
