"""`GridIndex`: locate batches of WGS84 points in unit cells; `GridHolder`: swap grid files safely at run time.
What a lookup answers (`PointResult`, `LocateResult`, `point_errors`) is grid.results.

The rule (what `locate_batch` answers, and what the tests check against a brute-force shapely reference):

1. A point is *in* a cell when the cell's closed polygon covers it (boundary included). When several cells
   cover it (it lies on a shared edge or vertex), it belongs to the one with the largest lattice column, and
   among those the largest row: **east wins, then north**. For whole squares this is the half-open rule
   [west, east) × [south, north); on a district outline the outline belongs to the district.
2. A point no cell covers is *snapped* to the nearest cell when that cell is within `snap_tolerance_m`
   (default 50 m, distances in the grid's `LocalMetric`); equally near cells are again decided east, then
   north. Beyond the tolerance the point is *outside*: no cell, but still a result, never an exception.
3. A point that is not a position (NaN, infinite, latitude beyond ±90 or longitude beyond ±180, e.g. lat/lon
   swapped) gets a per-point `error` sentence; the rest of the batch is answered normally.

How it is fast: cells are lattice squares clipped to the outline (`grid.lattice`), so the square of a point is
two `searchsorted` calls and its cell one array lookup. Whole squares answer at once. A clipped square is cut
into SUB × SUB sub-squares classified at load time as inside, outside or straddling its cell (with a margin
far larger than float rounding, so the classification is never wrong); only points in straddling sub-squares,
on lattice edges next to a clipped cell, or near the outline outside every cell reach GEOS.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely

from grid import CELLS_FILE
from grid.datum import FloatArray, LocalMetric
from grid.gridfile import GridFile, read_grid_file
from grid.lattice import Lattice
from grid.results import BoolArray, IntArray, LocateResult, ObjArray, PointResult, point_errors
from pipeline.model.watched import WatchedFile

SUB = 16                 # sub-squares per side of a clipped square
_MARGIN_DEG = 1e-9       # ≈ 0.1 mm: the sub-square classification holds for points this far outside a sub-square
DEFAULT_SNAP_TOLERANCE_M = 50.0

# Sub-square classes.
_OUT, _IN, _EDGE = 0, 1, 2


def _with_none(values: list[str]) -> ObjArray:
    """Object array with a trailing None, so that indexing it with -1 (no cell) gives None."""
    arr = np.empty(len(values) + 1, dtype=object)
    arr[:-1] = values
    arr[-1] = None
    return arr


class GridIndex:
    """A loaded grid file, ready to locate points. Immutable after construction; safe to share between threads."""

    def __init__(self, grid: GridFile, snap_tolerance_m: float = DEFAULT_SNAP_TOLERANCE_M) -> None:
        if not snap_tolerance_m >= 0.0:
            raise ValueError(f"snap_tolerance_m must be >= 0, got {snap_tolerance_m}")
        self.version: str = grid.version
        self.source: str = grid.source
        self.snap_tolerance_m = float(snap_tolerance_m)
        self.lattice: Lattice = grid.lattice
        lat = self.lattice
        cells = grid.cells
        self._codes = _with_none([c.code for c in cells])
        self._subdistricts = _with_none([c.subdistrict for c in cells])
        self._kinds = _with_none([c.kind for c in cells])
        self._cols = np.array([c.col for c in cells], dtype=np.int64)
        self._rows = np.array([c.row for c in cells], dtype=np.int64)
        self._geoms = np.array([c.geometry for c in cells], dtype=object)
        shapely.prepare(self._geoms)
        self._code_to_index = {c.code: i for i, c in enumerate(cells)}
        self._lon_edges = lat.lon_edges()
        self._lat_edges = lat.lat_edges()

        # Square → cell (or -1). The validator guarantees one cell per square.
        self._square_cell = np.full((lat.nrows, lat.ncols), -1, dtype=np.int64)
        self._square_cell[self._rows - lat.row0, self._cols - lat.col0] = np.arange(len(cells))
        boxes = np.array([shapely.box(*lat.square(int(c), int(r))) for c, r in zip(self._cols, self._rows,
                                                                                      strict=True)])
        self._full = shapely.covers(self._geoms, boxes)
        self._sub_class, self._sub_slot = self._classify_sub_squares()
        self._sub_slot = np.append(self._sub_slot, -1)  # index -1 (no cell) → no slot
        self._square_cell_flat = self._square_cell.ravel()
        self._inv_dlon = float(lat.ncols / (self._lon_edges[-1] - self._lon_edges[0]))
        self._inv_dlat = float(lat.nrows / (self._lat_edges[-1] - self._lat_edges[0]))
        self._tables = (self._codes, self._subdistricts, self._kinds)

        # Snapping: squares from which a cell may lie within the tolerance, and the cells in metres.
        self.metric = LocalMetric(*grid.metric_ref) if grid.metric_ref != (0.0, 0.0) else LocalMetric(
            float(self._lon_edges.mean()), float(self._lat_edges.mean()))
        self._near = self._near_squares()
        self._projected = shapely.transform(
            self._geoms, lambda xy: np.column_stack(self.metric.to_xy(xy[:, 0], xy[:, 1])))
        self._tree = shapely.STRtree(self._projected)

    @classmethod
    def load(cls, path: Path | None = None, snap_tolerance_m: float = DEFAULT_SNAP_TOLERANCE_M) -> GridIndex:
        """Load a grid file (default: the shipped grid/data/cells.geojson). Raises GridFileError if unreadable.

        Loading does not validate; `GridHolder` validates before it swaps, and the shipped file is validated
        by the test suite.
        """
        return cls(read_grid_file(Path(path) if path is not None else CELLS_FILE), snap_tolerance_m)

    def __len__(self) -> int:
        return len(self._cols)

    def __setstate__(self, state: dict[str, object]) -> None:
        # an index read back from the grid cache (grid.cache): shapely does not keep the prepared state
        self.__dict__.update(state)
        shapely.prepare(self._geoms)

    def _classify_sub_squares(self) -> tuple[npt.NDArray[np.uint8], IntArray]:
        """For each clipped cell, a SUB×SUB array of sub-square classes; slot per cell (-1 for whole squares)."""
        clipped = np.flatnonzero(~self._full)
        slot = np.full(len(self._cols), -1, dtype=np.int64)
        slot[clipped] = np.arange(len(clipped))
        classes = np.zeros((len(clipped), SUB, SUB), dtype=np.uint8)
        if len(clipped) == 0:
            return classes, slot
        a, b = np.meshgrid(np.arange(SUB), np.arange(SUB), indexing="ij")  # a: x step, b: y step
        for k, i in enumerate(clipped):
            x0, y0, x1, y1 = self.lattice.square(int(self._cols[i]), int(self._rows[i]))
            w, h = (x1 - x0) / SUB, (y1 - y0) / SUB
            sub_boxes = shapely.box(x0 + a * w - _MARGIN_DEG, y0 + b * h - _MARGIN_DEG,
                                    x0 + (a + 1) * w + _MARGIN_DEG, y0 + (b + 1) * h + _MARGIN_DEG)
            geom = self._geoms[i]
            inside = shapely.covers(geom, sub_boxes)
            touching = shapely.intersects(geom, sub_boxes)
            classes[k] = np.where(inside, _IN, np.where(touching, _EDGE, _OUT))
        return classes, slot

    def _near_squares(self) -> BoolArray:
        """Squares within reach of a cell for the snapping tolerance (a generous superset; GEOS decides)."""
        lat = self.lattice
        sq_w = (self._lon_edges[1] - self._lon_edges[0]) * self.metric.m_per_deg_lon
        sq_h = (self._lat_edges[1] - self._lat_edges[0]) * self.metric.m_per_deg_lat
        k = int(math.ceil(self.snap_tolerance_m / min(sq_w, sq_h))) + 1
        has_cell = self._square_cell >= 0
        near = np.zeros_like(has_cell)
        padded = np.pad(has_cell, k)
        for dr in range(2 * k + 1):
            for dc in range(2 * k + 1):
                near |= padded[dr:dr + lat.nrows, dc:dc + lat.ncols]
        return near

    # ---- lookup ---------------------------------------------------------------------------------------

    def locate_batch(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> LocateResult:
        """Locate each (lons[i], lats[i]) (WGS84 degrees) by the rule in the module docstring.

        Raises ValueError only when the two arrays differ in length; bad individual points get `error[i]`.
        None in the input counts as NaN.
        """
        x = np.asarray(lons, dtype=np.float64).ravel()
        y = np.asarray(lats, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"lons and lats differ in length: {x.shape[0]} != {y.shape[0]}")
        lat = self.lattice
        ex, ey = self._lon_edges, self._lat_edges
        # NaN compares False, so bad points are never in the window; the window lies within ±90/±180.
        in_window = (x >= ex[0]) & (x < ex[-1]) & (y >= ey[0]) & (y < ey[-1])
        all_in = bool(in_window.all())
        errors: dict[int, str] = {}
        if not all_in:
            out = np.flatnonzero(~in_window)
            errors = {int(out[k]): msg for k, msg in point_errors(x[out], y[out]).items()}
            x = np.where(in_window, x, ex[0])  # park points outside the window on square (0, 0)
            y = np.where(in_window, y, ey[0])
        ci = self._axis_index(x, ex, self._inv_dlon, lat.ncols)
        ri = self._axis_index(y, ey, self._inv_dlat, lat.nrows)
        cell = self._square_cell_flat[ri * lat.ncols + ci]
        if not all_in:
            cell[~in_window] = -1

        # Clipped cells: decide by the sub-square class, GEOS only for straddling sub-squares.
        slot = self._sub_slot[cell]
        todo = np.flatnonzero(slot >= 0)
        if len(todo):
            ct, rt = ci[todo], ri[todo]
            x0, y0 = ex[ct], ey[rt]
            a = np.minimum(((x[todo] - x0) / (ex[ct + 1] - x0) * SUB).astype(np.int64), SUB - 1)
            b = np.minimum(((y[todo] - y0) / (ey[rt + 1] - y0) * SUB).astype(np.int64), SUB - 1)
            cls = self._sub_class[slot[todo], a, b]
            edge = todo[cls == _EDGE]
            if len(edge):
                hit = shapely.covers(self._geoms[cell[edge]], shapely.points(x[edge], y[edge]))
                cell[edge[~hit]] = -1
            cell[todo[cls == _OUT]] = -1

        missed = np.flatnonzero(cell < 0) if all_in else np.flatnonzero((cell < 0) & in_window)
        snapped = np.zeros(len(x), dtype=bool)
        distance = np.zeros(len(x), dtype=np.float64)
        if len(missed):
            # A point on the west/south edge of its square may be on a neighbour cell's east/north edge.
            tie = missed[(x[missed] == ex[ci[missed]]) | (y[missed] == ey[ri[missed]])]
            if len(tie):
                cell[tie] = self._neighbour_ties(tie, x, y, ci, ri)
        if len(missed) or not all_in:
            distance[cell < 0] = np.nan
            bad = np.zeros(len(x), dtype=bool)
            bad[list(errors)] = True
            xo = np.asarray(lons, dtype=np.float64).ravel()
            yo = np.asarray(lats, dtype=np.float64).ravel()
            self._snap(cell, distance, snapped, xo, yo, ci, ri, in_window, bad)
        return LocateResult(cell, snapped, distance, errors, self.version, self._tables)

    @staticmethod
    def _axis_index(v: FloatArray, edges: FloatArray, inv_step: float, n: int) -> IntArray:
        """Index k with edges[k] <= v < edges[k+1], for v inside [edges[0], edges[-1]).

        Arithmetic first (fast), then one exact comparison each way against the stored edges, so a value on an
        edge goes east/north exactly as the half-open rule says, whatever the rounding of the division.
        """
        k = np.minimum(((v - edges[0]) * inv_step).astype(np.int64), n - 1)
        k -= v < edges[k]
        k += v >= edges[k + 1]
        return np.asarray(k, dtype=np.int64)

    def _neighbour_ties(self, tie: IntArray, x: FloatArray, y: FloatArray, ci: IntArray,
                        ri: IntArray) -> IntArray:
        """For points exactly on the west and/or south edge of their square: the first covering neighbour
        in east-then-north order, i.e. (col, row-1), then (col-1, row), then (col-1, row-1)."""
        out = np.full(len(tie), -1, dtype=np.int64)
        for k, i in enumerate(tie):
            c, r = int(ci[i]), int(ri[i])
            on_x, on_y = x[i] == self._lon_edges[c], y[i] == self._lat_edges[r]
            candidates = []
            if on_y:
                candidates.append((c, r - 1))
            if on_x:
                candidates.append((c - 1, r))
            if on_x and on_y:
                candidates.append((c - 1, r - 1))
            pt = shapely.Point(x[i], y[i])
            for cc, rr in candidates:
                if 0 <= cc < self.lattice.ncols and 0 <= rr < self.lattice.nrows:
                    j = int(self._square_cell[rr, cc])
                    if j >= 0 and self._geoms[j].covers(pt):
                        out[k] = j
                        break
        return out

    def _snap(self, cell: IntArray, distance: FloatArray, snapped: BoolArray, x: FloatArray, y: FloatArray,
              ci: IntArray, ri: IntArray, in_window: BoolArray, bad: BoolArray) -> None:
        """Snap uncovered points to the nearest cell within the tolerance (in place)."""
        if self.snap_tolerance_m <= 0.0:
            return
        uncovered = (cell < 0) & ~bad
        near = np.zeros(len(x), dtype=bool)
        idx = np.flatnonzero(uncovered & in_window)
        near[idx] = self._near[ri[idx], ci[idx]]
        # Outside the lattice window: near only if the window edge itself is within the tolerance.
        out_idx = np.flatnonzero(uncovered & ~in_window)
        if len(out_idx):
            px, py = self.metric.to_xy(x[out_idx], y[out_idx])
            wx0, wy0 = self.metric.to_xy(self._lon_edges[:1], self._lat_edges[:1])
            wx1, wy1 = self.metric.to_xy(self._lon_edges[-1:], self._lat_edges[-1:])
            dx = np.maximum(np.maximum(wx0 - px, px - wx1), 0.0)
            dy = np.maximum(np.maximum(wy0 - py, py - wy1), 0.0)
            near[out_idx] = np.hypot(dx, dy) <= self.snap_tolerance_m
        cand = np.flatnonzero(near)
        if not len(cand):
            return
        px, py = self.metric.to_xy(x[cand], y[cand])
        (pi, ti), dist = self._tree.query_nearest(shapely.points(px, py), max_distance=self.snap_tolerance_m,
                                                  return_distance=True, all_matches=True)
        keep = dist <= self.snap_tolerance_m
        pi, ti, dist = pi[keep], ti[keep], dist[keep]
        if not len(pi):
            return
        # Nearest first; among equally near cells east, then north, wins (same as the tie rule inside):
        # sort by point, then distance descending, column, row, and keep the last entry of each point.
        order = np.lexsort((self._rows[ti], self._cols[ti], -dist, pi))
        pi, ti, dist = pi[order], ti[order], dist[order]
        last = np.append(pi[1:] != pi[:-1], True)
        i = cand[pi[last]]
        cell[i] = ti[last]
        distance[i] = dist[last]
        snapped[i] = True

    def locate(self, lon: float | None, lat: float | None) -> PointResult:
        """Locate one point (convenience; batches are much faster per point)."""
        return self.locate_batch([np.nan if lon is None else lon], [np.nan if lat is None else lat]).point(0)

    # ---- inspection ------------------------------------------------------------------------------------

    def cell_geometry(self, code: str) -> shapely.Geometry | None:
        """The WGS84 polygon of a cell, or None for an unknown code."""
        i = self._code_to_index.get(code)
        return None if i is None else self._geoms[i]

    def cell_info(self, code: str) -> dict[str, object] | None:
        """Code, sub-district, kind, lattice square and centre of a cell; None for an unknown code."""
        i = self._code_to_index.get(code)
        if i is None:
            return None
        c = self._geoms[i].centroid
        return {"cell": code, "subdistrict": self._subdistricts[i], "grid": code[:12],
                "district": code[:6], "grid_kind": self._kinds[i], "col": int(self._cols[i]),
                "row": int(self._rows[i]), "whole_square": bool(self._full[i]),
                "centroid": (round(c.x, 7), round(c.y, 7))}

    def lattice_squares(self) -> tuple[IntArray, IntArray]:
        """Absolute lattice (col, row) of every cell, in file order."""
        return self._cols.copy(), self._rows.copy()

    def codes(self) -> list[str]:
        """All cell codes, in file order."""
        return list(self._codes[:-1])


class GridHolder(WatchedFile[GridIndex]):
    """The grid a running worker uses, swapped only for a file that passes validation (pipeline.model.watched).

    `current` is always a complete, validated `GridIndex` (attribute assignment is atomic, so readers never
    see a half-loaded grid). `reload()` validates and swaps; on any problem it keeps the old index, records
    `last_error` and returns False. `maybe_reload()` is cheap (one `stat`) and reloads only when the file
    changed since the last attempt, so a bad file is reported once, not every few seconds. A file of the grid
    version already running is not indexed again. With `cache_dir`, the index of a file that passed validation
    is kept there, and a worker started again on the same file reads it back instead (grid.cache).
    """

    label = "grid"
    refused = (ValueError,)          # GridFileError is one too

    def __init__(self, path: Path | None = None, snap_tolerance_m: float = DEFAULT_SNAP_TOLERANCE_M,
                 cache_dir: Path | None = None) -> None:
        self.snap_tolerance_m = snap_tolerance_m
        self.cache_dir = cache_dir      # where validated indexes are kept (grid.cache); None: no cache
        super().__init__(Path(path) if path is not None else CELLS_FILE)

    def first(self) -> GridIndex:
        return self._load(first=True)

    def load(self) -> GridIndex:
        return self._load(first=False)

    def _load(self, first: bool) -> GridIndex:
        from grid import cache
        from grid.gridfile import GridFileError, parse_grid_bytes
        from grid.validate import validate_parsed

        path = self.file()
        try:
            data = path.read_bytes()
        except OSError as err:
            raise GridFileError(f"{path}: cannot read: {err.strerror}") from None
        key = cache.cache_key(data, str(path), self.snap_tolerance_m) if self.cache_dir is not None else None
        if key is not None and self.cache_dir is not None:
            kept = cache.load_cached(self.cache_dir, key)
            if isinstance(kept, GridIndex):       # this very file passed validation when it was stored
                if not first and kept.version == self.current.version:
                    return self.current
                return kept
        grid = parse_grid_bytes(data, str(path))
        problems = validate_parsed(grid)
        if problems:
            if first:
                raise ValueError(f"{self.path}: invalid grid, refusing to start: {'; '.join(problems[:5])}")
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ValueError(f"refused {self.path}: " + "; ".join(problems[:3]) + more)
        if not first and grid.version == self.current.version:
            return self.current
        index = GridIndex(grid, self.snap_tolerance_m)
        if key is not None and self.cache_dir is not None:
            cache.store(self.cache_dir, key, index)
        return index

    def same(self, old: GridIndex, new: GridIndex) -> bool:
        return old is new
