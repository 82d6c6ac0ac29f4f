"""The unit-cell lattice: squares of about 100 m × 100 m on fixed decimal degree steps.

Column k spans longitudes [k·Δλ, (k+1)·Δλ), row j spans latitudes [j·Δφ, (j+1)·Δφ), with Δλ = 0.00105° and
Δφ = 0.0009° (≈ 100.0 m × 99.9 m at Shanghai's latitude, 31.2° N: one 万米单元网格). Every edge is a whole
number of 1e-7 degrees, so the edge written in a GeoJSON file (7 decimals) and the edge computed here are the
same float: `edge = n / 1e7` is the correctly rounded value of the decimal n·10⁻⁷, exactly as a JSON parser
reads it. That makes the lookup's interval test agree bit for bit with polygon tests on the stored cells.

The tie rule follows from the half-open intervals: a point on a shared edge or vertex belongs to the square to
its east, and then to its north.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grid.datum import FloatArray

DLON_E7 = 10_500   # 0.00105° of longitude
DLAT_E7 = 9_000    # 0.0009° of latitude
COORD_DECIMALS = 7  # coordinates in grid files are rounded to 1e-7° (≈ 1 cm)


@dataclass(frozen=True, slots=True)
class Lattice:
    """A window of the global lattice: columns col0 … col0+ncols-1, rows row0 … row0+nrows-1."""

    col0: int
    row0: int
    ncols: int
    nrows: int
    dlon_e7: int = DLON_E7
    dlat_e7: int = DLAT_E7

    @classmethod
    def covering(cls, minx: float, miny: float, maxx: float, maxy: float, margin: int = 2,
                 dlon_e7: int = DLON_E7, dlat_e7: int = DLAT_E7) -> Lattice:
        """The smallest window holding the box, plus `margin` empty squares on every side."""
        c0 = int(np.floor(minx * 1e7 / dlon_e7)) - margin
        r0 = int(np.floor(miny * 1e7 / dlat_e7)) - margin
        c1 = int(np.floor(maxx * 1e7 / dlon_e7)) + margin
        r1 = int(np.floor(maxy * 1e7 / dlat_e7)) + margin
        return cls(c0, r0, c1 - c0 + 1, r1 - r0 + 1, dlon_e7, dlat_e7)

    def lon_edge(self, col: int) -> float:
        """West edge of absolute column `col`."""
        return (col * self.dlon_e7) / 1e7

    def lat_edge(self, row: int) -> float:
        """South edge of absolute row `row`."""
        return (row * self.dlat_e7) / 1e7

    def lon_edges(self) -> FloatArray:
        """The ncols+1 column edges of the window, west to east."""
        return np.array([self.lon_edge(self.col0 + k) for k in range(self.ncols + 1)], dtype=np.float64)

    def lat_edges(self) -> FloatArray:
        """The nrows+1 row edges of the window, south to north."""
        return np.array([self.lat_edge(self.row0 + k) for k in range(self.nrows + 1)], dtype=np.float64)

    def square(self, col: int, row: int) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the square at absolute (col, row)."""
        return self.lon_edge(col), self.lat_edge(row), self.lon_edge(col + 1), self.lat_edge(row + 1)

    def to_json(self) -> dict[str, int]:
        return {"col0": self.col0, "row0": self.row0, "ncols": self.ncols, "nrows": self.nrows,
                "dlon_e7": self.dlon_e7, "dlat_e7": self.dlat_e7}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Lattice:
        """Parse the `lattice` member of a grid file; raises ValueError naming the bad key."""
        vals: dict[str, int] = {}
        for key in ("col0", "row0", "ncols", "nrows", "dlon_e7", "dlat_e7"):
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"lattice.{key}: expected an integer, got {v!r}")
            vals[key] = v
        for key in ("ncols", "nrows", "dlon_e7", "dlat_e7"):
            if vals[key] <= 0:
                raise ValueError(f"lattice.{key}: must be positive, got {vals[key]}")
        return cls(**vals)

    def locate_squares(self, lons: FloatArray, lats: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Window-relative (col, row) of the half-open square holding each point; -1 or n when outside.

        searchsorted against the exact edge floats (not floor-division) so that a point exactly on an edge is
        put east/north of it without any rounding doubt.
        """
        ci = np.searchsorted(self.lon_edges(), lons, side="right") - 1
        ri = np.searchsorted(self.lat_edges(), lats, side="right") - 1
        return ci, ri
