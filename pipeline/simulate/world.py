"""The simulated city: the grid's cells of each district, places to put problems, addresses that resolve.

Everything here is read from the project's own data (grid/data, the gazetteer, the dispatch rules) so that
what the simulator generates is what the worker will locate and route. Randomness comes from the caller's
`random.Random`, so the world's answers are deterministic for a seed.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import cast

import shapely

from grid import AREAS_FILE, CELLS_FILE
from grid.gazetteer import Gazetteer
from grid.gridfile import CellRecord, GridFile, read_grid_file
from grid.index import GridIndex
from pipeline.model.events import GridKind, Location
from pipeline.simulate.spec import book_of, grid_of
from rules.engine import DEFAULT_RULES, Ruleset, load_ruleset

EARTH_M = 6_371_008.8


def metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (haversine), computed here rather than borrowed from the pipeline."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(a)))


def shift(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    """The point `east_m` metres east and `north_m` metres north of (lon, lat)."""
    return (round(lon + east_m / (111_195.0 * math.cos(math.radians(lat))), 7),
            round(lat + north_m / 111_195.0, 7))


def offset(lon: float, lat: float, max_m: float, rng: random.Random) -> tuple[float, float]:
    """A point at most `max_m` metres from (lon, lat), uniform in the disc (GPS scatter of one spot)."""
    r = max_m * math.sqrt(rng.random())
    a = rng.random() * 2 * math.pi
    dlat = r * math.sin(a) / 111_195.0
    dlon = r * math.cos(a) / (111_195.0 * math.cos(math.radians(lat)))
    return round(lon + dlon, 7), round(lat + dlat, 7)


@dataclass(frozen=True, slots=True)
class Spot:
    """A located point: where a problem is, and the grid's answer for it."""

    lon: float
    lat: float
    cell: str
    subdistrict: str
    grid_kind: str
    location: Location

    @property
    def book(self) -> str:
        """The case book it is merged in: its sub-district (docs/cases.md §1.1)."""
        return book_of(self.cell)

    @property
    def grid(self) -> str:
        """Its management grid (the first 12 digits of the cell code; case ids carry it)."""
        return grid_of(self.cell)


@dataclass(frozen=True, slots=True)
class Address:
    """An address string a caller gives, and the spot the gazetteer and the grid put it at."""

    text: str
    spot: Spot


class District:
    """One district's cells, sub-districts and resolvable addresses."""

    def __init__(self, code: str, name: str, cells: list[CellRecord], subdistricts: dict[str, str],
                 world: World) -> None:
        self.code = code
        self.name = name
        self.cells = cells
        self.subdistricts = subdistricts          # code -> name
        self.world = world
        self.by_subdistrict: dict[str, list[CellRecord]] = {}
        for c in cells:
            self.by_subdistrict.setdefault(c.subdistrict, []).append(c)
        self.street_cells = [c for c in cells if c.kind == "street"] or cells
        self._bounds: dict[str, tuple[float, float, float, float]] = {}

    def spot_in(self, cell: CellRecord, rng: random.Random) -> Spot:
        """A random point inside `cell` (away from its edges), located by the real grid index."""
        bounds = self._bounds.get(cell.code)
        if bounds is None:
            bounds = self._bounds[cell.code] = cell.geometry.bounds
        x0, y0, x1, y1 = bounds
        mx, my = (x1 - x0) * 0.08, (y1 - y0) * 0.08
        # a cell that covers its whole square is that square: a point within the margins is inside it
        whole = self.world.whole.cells.get((cell.col, cell.row)) is cell
        for _ in range(20):
            lon = round(rng.uniform(x0 + mx, x1 - mx), 7)
            lat = round(rng.uniform(y0 + my, y1 - my), 7)
            if whole or shapely.contains_xy(cell.geometry, lon, lat):
                spot = self.world.locate(lon, lat)
                if spot is not None and spot.cell == cell.code:
                    return spot
        p = cell.geometry.representative_point()
        spot = self.world.locate(round(p.x, 7), round(p.y, 7))
        assert spot is not None, f"representative point of {cell.code} is in no cell"
        return spot

    def random_spot(self, rng: random.Random, street: bool = False) -> Spot:
        return self.spot_in(rng.choice(self.street_cells if street else self.cells), rng)

    @cached_property
    def grid_edges(self) -> list[tuple[CellRecord, CellRecord]]:
        """Side-by-side cells of one sub-district in two management grids (each covering its whole square, so
        the side they share is a straight line): where one problem's reports fall on both sides of a grid edge
        and still meet in one case book (docs/cases.md §1.1)."""
        whole = self.world.whole.cells
        by_square = {(c.col, c.row): c for c in self.cells if whole.get((c.col, c.row)) is c}
        out: list[tuple[CellRecord, CellRecord]] = []
        for (col, row), c in by_square.items():
            for n in (by_square.get((col + 1, row)), by_square.get((col, row + 1))):
                if n is not None and n.subdistrict == c.subdistrict and n.grid != c.grid:
                    out.append((c, n))
        return out

    def edge_pair(self, rng: random.Random, within_m: float) -> tuple[Spot, Spot] | None:
        """Two points on either side of a grid edge, each at most `within_m` / 3 from it and from the other
        along it (so at most 0.75 × `within_m` apart), or None when this draw missed (or there is no edge)."""
        if not self.grid_edges:
            return None
        c, n = rng.choice(self.grid_edges)
        x0, y0, x1, y1 = c.geometry.bounds
        third = within_m / 3
        a, b = rng.uniform(0.5, third), rng.uniform(0.5, third)
        along = rng.uniform(-third, third)
        if n.col != c.col:       # n is east of c: the shared side is the meridian x1
            lat = rng.uniform(y0 + (y1 - y0) * 0.3, y1 - (y1 - y0) * 0.3)
            first, second = shift(x1, lat, -a, 0.0), shift(x1, lat, b, along)
        else:                    # n is north of c: the shared side is the parallel y1
            lon = rng.uniform(x0 + (x1 - x0) * 0.3, x1 - (x1 - x0) * 0.3)
            first, second = shift(lon, y1, 0.0, -a), shift(lon, y1, along, b)
        s1, s2 = self.world.locate(*first), self.world.locate(*second)
        if s1 is None or s2 is None or s1.cell != c.code or s2.cell != n.code:
            return None
        return s1, s2

    @cached_property
    def addresses(self) -> list[Address]:
        """Addresses in this district that the gazetteer places inside one of its cells."""
        gaz = self.world.gazetteer
        texts: list[str] = []
        for road in gaz.roads:
            if road.district != self.code:
                continue
            lo, hi = road.numbers
            step = max(1, (hi - lo) // 40)
            for n in range(lo + step // 2, hi, step):
                texts.append(f"{self.name}{road.name}{n}号" if n % 3 else f"{road.name}{n}弄{1 + n % 12}号")
        for place in gaz.places:
            if place.district != self.code:
                continue
            texts.append(place.name)
            texts += [f"{self.name}{place.name}{ent}" for ent, _ in place.entrances]
        out: list[Address] = []
        for text in texts:
            point = gaz.resolve(text)
            if point is None:
                continue
            spot = self.world.locate(*point)
            if spot is not None and spot.cell.startswith(self.code):
                out.append(Address(text, spot))
        return out

    @cached_property
    def unresolvable(self) -> list[str]:
        """Addresses a caller might give that the gazetteer cannot place (they go to the unlocated queue)."""
        gaz = self.world.gazetteer
        roads = [r for r in gaz.roads if r.district == self.code]
        other = [r for r in gaz.roads if r.district != self.code]
        texts = [f"{r.name}附近" for r in roads]                                 # no house number
        texts += [f"{r.name}{r.numbers[1] + 700}号" for r in roads]               # beyond the known range
        texts += [f"{self.name}{r.name}100号" for r in other[:6]]                 # district contradicts road
        texts += [f"{self.name}{n}" for n in ("菜场门口", "小区后门垃圾房", "地铁站出口旁", "老公房弄堂里")]
        return [t for t in texts if gaz.resolve(t) is None]


class WholeSquares:
    """The lattice squares a cell covers entirely, for locating one point without the batch machinery.

    Inside such a square the grid index answers that cell whatever the point (no clipping test, no tie, no
    snapping), so `cell_at` gives the index's own answer there; anywhere else it says None and the caller asks
    the index. The planner locates a few points per attempt, and the index's per-call cost (numpy arrays for
    one point) was most of a month's planning time.
    """

    def __init__(self, grid_file: GridFile) -> None:
        lattice = grid_file.lattice
        self.col0, self.row0 = lattice.col0, lattice.row0
        self.lon_edges: list[float] = lattice.lon_edges().tolist()
        self.lat_edges: list[float] = lattice.lat_edges().tolist()
        cells = grid_file.cells
        squares = [shapely.box(*lattice.square(c.col, c.row)) for c in cells]
        covered = shapely.covers([c.geometry for c in cells], squares)
        self.cells: dict[tuple[int, int], CellRecord] = {
            (c.col, c.row): c for c, whole in zip(cells, covered.tolist(), strict=True) if whole}

    def cell_at(self, lon: float, lat: float) -> CellRecord | None:
        """The cell of (lon, lat) when it lies in a wholly covered square, else None (ask the index)."""
        xs, ys = self.lon_edges, self.lat_edges
        # the half-open rule edges[k] <= v < edges[k+1], as the index applies it; NaN fails both tests
        if not (xs[0] <= lon < xs[-1] and ys[0] <= lat < ys[-1]):
            return None
        return self.cells.get((self.col0 + bisect_right(xs, lon) - 1, self.row0 + bisect_right(ys, lat) - 1))


class World:
    """The grid, gazetteer and rules the simulation is made against (the same files the worker loads)."""

    def __init__(self, cells_file: Path = CELLS_FILE, rules_file: Path = DEFAULT_RULES) -> None:
        grid_file = read_grid_file(cells_file)
        self.index = GridIndex(grid_file)
        self.whole = WholeSquares(grid_file)
        self.grid_version = grid_file.version
        self.gazetteer = Gazetteer.load()
        self.rules: Ruleset = load_ruleset(rules_file)
        names = _area_names(AREAS_FILE)
        self.districts: dict[str, District] = {}
        by_district: dict[str, list[CellRecord]] = {}
        for c in grid_file.cells:
            by_district.setdefault(c.district, []).append(c)
        for code, cells in by_district.items():
            subs = {c.subdistrict: names.get(c.subdistrict, c.subdistrict) for c in cells}
            self.districts[code] = District(code, names.get(code, code), cells, subs, self)

    def locate(self, lon: float, lat: float) -> Spot | None:
        """The grid's cell for a point, or None when the point is in no cell."""
        cell = self.whole.cell_at(lon, lat)
        if cell is not None:
            # the grid file's kinds are the index's GridKind values (read from the same file)
            whole = Location(cell.code, cell.subdistrict, cast(GridKind, cell.kind), self.grid_version)
            return Spot(lon, lat, cell.code, cell.subdistrict, cell.kind, whole)
        res = self.index.locate(lon, lat)
        loc = res.location()
        if loc is None or res.cell is None:
            return None
        return Spot(lon, lat, res.cell, res.subdistrict or "", res.grid_kind or "", loc)


def _area_names(path: Path) -> dict[str, str]:
    """District and sub-district code -> Chinese name, from grid/data/areas.geojson."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {f["properties"]["code"]: f["properties"]["name"] for f in doc["features"]
            if f["properties"].get("level") in ("district", "subdistrict")}
