"""GCJ-02 ↔ WGS84 against published coordinate pairs, and the round trip over Shanghai."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.datum import LocalMetric, gcj02_to_wgs84, haversine_m, wgs84_to_gcj02

# (WGS84 lon, lat) → (GCJ-02 lon, lat): the public test vectors of the eviltransform project (Shanghai,
# Shenzhen, Beijing), computed by an independent implementation.
KNOWN_PAIRS = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),
]


@pytest.mark.parametrize(("wgs", "gcj"), KNOWN_PAIRS)
def test_forward_matches_published_pairs(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    """WGS84 → GCJ-02 reproduces the published GCJ-02 coordinates to 1e-9°."""
    lon, lat = wgs84_to_gcj02(np.array([wgs[0]]), np.array([wgs[1]]))
    assert (lon[0], lat[0]) == pytest.approx(gcj, abs=1e-9)


@pytest.mark.parametrize(("wgs", "gcj"), KNOWN_PAIRS)
def test_inverse_is_within_5_m_of_published_pairs(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    """GCJ-02 → WGS84 lands within 5 m of the true WGS84 position (in fact within millimetres)."""
    lon, lat = gcj02_to_wgs84(np.array([gcj[0]]), np.array([gcj[1]]))
    assert haversine_m(float(lon[0]), float(lat[0]), *wgs) < 5.0
    assert haversine_m(float(lon[0]), float(lat[0]), *wgs) < 0.01


@settings(max_examples=200, deadline=None)
@given(st.floats(121.0, 122.0), st.floats(30.7, 31.9))
def test_round_trip_over_shanghai_is_sub_millimetre(lon: float, lat: float) -> None:
    """Converting to GCJ-02 and back returns the same point to under a millimetre."""
    glon, glat = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
    wlon, wlat = gcj02_to_wgs84(glon, glat)
    assert haversine_m(float(wlon[0]), float(wlat[0]), lon, lat) < 1e-3


def test_the_offset_in_shanghai_is_the_documented_size() -> None:
    """In Hongkou the GCJ-02 offset is about +0.0045° lon and -0.0020° lat (shared/data/README)."""
    glon, glat = wgs84_to_gcj02(np.array([121.48]), np.array([31.27]))
    assert glon[0] - 121.48 == pytest.approx(0.0045, abs=0.0005)
    assert glat[0] - 31.27 == pytest.approx(-0.0020, abs=0.0005)


def test_inverse_refuses_nan() -> None:
    """NaN cannot converge and says so instead of returning garbage."""
    with pytest.raises(ValueError, match="did not converge"):
        gcj02_to_wgs84(np.array([np.nan]), np.array([31.0]))


@settings(max_examples=100, deadline=None)
@given(st.floats(-0.02, 0.02), st.floats(-0.02, 0.02))
def test_local_metric_matches_haversine_over_a_district(dlon: float, dlat: float) -> None:
    """Within ±2 km the local metric's distances agree with great-circle distances to 0.5%."""
    m = LocalMetric(121.45, 31.2)
    x, y = m.to_xy(np.array([121.45 + dlon]), np.array([31.2 + dlat]))
    hv = haversine_m(121.45, 31.2, 121.45 + dlon, 31.2 + dlat)
    assert float(np.hypot(x[0], y[0])) == pytest.approx(hv, rel=5e-3, abs=1e-6)
