"""Datums and distances.

Chinese web-map data (the district outlines in ../shared/data) is in GCJ-02, an obfuscated offset of WGS84
used by licensed Chinese maps; everything on our wire is WGS84. `gcj02_to_wgs84` is applied once, at import
(`grid.build`). The forward transform is the published GCJ-02 formula (Krasovsky ellipsoid parameters); the
inverse has no closed form, so it is solved by fixed-point iteration, which converges to well under a
centimetre in a few steps inside China.

Distances for snapping use `LocalMetric`: an equirectangular projection around a reference latitude, in metres.
Over a district (a few km) its error against the geodesic is far below a metre, which is all a 50 m snapping
tolerance needs, and it keeps distance computations plain arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Parameters of the GCJ-02 formula (Krasovsky 1940 ellipsoid).
_A = 6378245.0
_EE = 0.00669342162296594323


def _offset(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The GCJ-02 offset (dlon, dlat) in degrees at WGS84 positions (lon, lat)."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
            + (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(y * math.pi) + 40.0 * np.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * math.pi) + 320.0 * np.sin(y * math.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
            + (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(x * math.pi) + 40.0 * np.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * math.pi) + 300.0 * np.sin(x / 30.0 * math.pi)) * 2.0 / 3.0)
    rad_lat = lat / 180.0 * math.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """WGS84 → GCJ-02 for arrays of positions in mainland China (no out-of-China test: we only ship Shanghai)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    dlon, dlat = _offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: FloatArray, lat: FloatArray, *, tol_deg: float = 1e-10,
                   max_iter: int = 30) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 → WGS84 by fixed-point iteration of the forward formula.

    Converges to `tol_deg` (1e-10° ≈ 0.01 mm) in practice within 3–5 iterations; raises ValueError if it
    does not (it would mean input far outside China or NaN).
    """
    glon = np.asarray(lon, dtype=np.float64)
    glat = np.asarray(lat, dtype=np.float64)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(max_iter):
        flon, flat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = flon - glon, flat - glat
        wlon, wlat = wlon - elon, wlat - elat
        if float(np.max(np.abs(elon), initial=0.0)) < tol_deg and float(np.max(np.abs(elat), initial=0.0)) < tol_deg:
            return wlon, wlat
    raise ValueError("GCJ-02 → WGS84 did not converge (input outside China, or not numbers)")


# Mean Earth radius (IUGG); with the equirectangular projection this gives metres within 0.3% over a district.
EARTH_RADIUS_M = 6371008.8


@dataclass(frozen=True, slots=True)
class LocalMetric:
    """Equirectangular projection to metres around `ref_lat` (degrees): x = R·cos(ref_lat)·Δλ, y = R·Δφ.

    The origin is (0°, 0°) shifted by `ref_lon`, so x and y stay small enough to keep sub-millimetre float
    precision. The same metric is used to snap points and to state the tolerance, so "within 50 m" means the
    same thing everywhere.
    """

    ref_lon: float
    ref_lat: float

    @property
    def m_per_deg_lon(self) -> float:
        return EARTH_RADIUS_M * math.cos(math.radians(self.ref_lat)) * math.pi / 180.0

    @property
    def m_per_deg_lat(self) -> float:
        return EARTH_RADIUS_M * math.pi / 180.0

    def to_xy(self, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Degrees → metres east and north of (ref_lon, ref_lat)."""
        return ((np.asarray(lon, dtype=np.float64) - self.ref_lon) * self.m_per_deg_lon,
                (np.asarray(lat, dtype=np.float64) - self.ref_lat) * self.m_per_deg_lat)


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (used by tests and the gazetteer's sanity checks)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))
