"""What `grid.index.GridIndex.locate_batch` answers: per-point results (`PointResult`), the batch's columns
(`LocateResult`), and the per-point errors of pairs that are not WGS84 positions (`point_errors`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grid.datum import FloatArray
from pipeline.model.events import GridKind, Location

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class PointResult:
    """Where one point was located (see the module docstring for the rule)."""

    cell: str | None
    subdistrict: str | None
    grid_kind: GridKind | None
    snapped: bool
    error: str | None
    distance_m: float      # 0.0 inside a cell, the snapping distance when snapped, NaN otherwise
    grid_version: str

    def location(self) -> Location | None:
        """The pipeline's `Location` (cell None when outside); None when the point itself was bad."""
        if self.error is not None:
            return None
        return Location(self.cell, self.subdistrict, self.grid_kind, self.grid_version, self.snapped)


class LocateResult:
    """Parallel per-point answers of one batch; `cell_index[i]` is -1 where there is no cell.

    `cell`, `subdistrict`, `grid_kind` and `error` are object arrays of str or None, built on first access (a
    worker that only needs some of them does not pay for the others); `snapped` is bool; `distance_m` is 0
    inside a cell, the snapping distance when snapped, NaN when outside or bad.
    """

    __slots__ = ("cell_index", "snapped", "distance_m", "grid_version", "_errors", "_tables", "_cache")

    def __init__(self, cell_index: IntArray, snapped: BoolArray, distance_m: FloatArray, errors: dict[int, str],
                 grid_version: str, tables: tuple[ObjArray, ObjArray, ObjArray]) -> None:
        self.cell_index = cell_index
        self.snapped = snapped
        self.distance_m = distance_m
        self.grid_version = grid_version
        self._errors = errors
        self._tables = tables
        self._cache: dict[str, ObjArray] = {}

    def __len__(self) -> int:
        return len(self.cell_index)

    def _column(self, name: str, k: int) -> ObjArray:
        col = self._cache.get(name)
        if col is None:
            col = self._cache[name] = self._tables[k][self.cell_index]
        return col

    @property
    def cell(self) -> ObjArray:
        """15-digit cell code per point, or None."""
        return self._column("cell", 0)

    @property
    def subdistrict(self) -> ObjArray:
        """9-digit sub-district code per point, or None."""
        return self._column("subdistrict", 1)

    @property
    def grid_kind(self) -> ObjArray:
        """street / residential / village / building per point, or None."""
        return self._column("grid_kind", 2)

    @property
    def error(self) -> ObjArray:
        """None, or why point i is not a position (e.g. "latitude out of range: 121.4 (lat/lon swapped?)")."""
        col = self._cache.get("error")
        if col is None:
            col = self._cache["error"] = np.full(len(self.cell_index), None, dtype=object)
            for i, msg in self._errors.items():
                col[i] = msg
        return col

    @property
    def errors(self) -> dict[int, str]:
        """Only the bad points: index → reason (cheap to check: empty for a clean batch)."""
        return dict(self._errors)

    @property
    def outside(self) -> BoolArray:
        """Valid points that are in no cell, even after snapping."""
        out = self.cell_index < 0
        if self._errors:
            out[list(self._errors)] = False
        return out

    def point(self, i: int) -> PointResult:
        """The answer for point i as a value object."""
        j = int(self.cell_index[i])
        codes, subs, kinds = self._tables
        return PointResult(codes[j], subs[j], kinds[j], bool(self.snapped[i]), self._errors.get(i),
                           float(self.distance_m[i]), self.grid_version)

    def location(self, i: int) -> Location | None:
        """`pipeline.model.events.Location` for point i (None when the point was bad: see `error[i]`)."""
        return self.point(i).location()


def point_errors(lons: FloatArray, lats: FloatArray) -> dict[int, str]:
    """Index → reason for each pair that is not a WGS84 position (NaN, infinite, out of range, swapped)."""
    errors: dict[int, str] = {}
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(lons) & np.isfinite(lats) & (np.abs(lats) <= 90.0) & (np.abs(lons) <= 180.0)
    for i in np.flatnonzero(~ok).tolist():
        lon, lat = float(lons[i]), float(lats[i])
        if math.isnan(lon) or math.isnan(lat):
            errors[i] = f"{'longitude' if math.isnan(lon) else 'latitude'} is not a number"
        elif math.isinf(lon) or math.isinf(lat):
            errors[i] = f"{'longitude' if math.isinf(lon) else 'latitude'} is infinite"
        elif abs(lat) > 90.0:
            hint = " (lat/lon swapped?)" if abs(lat) <= 180.0 and abs(lon) <= 90.0 else ""
            errors[i] = f"latitude out of range: {lat}{hint}"
        else:
            errors[i] = f"longitude out of range: {lon}"
    return errors
