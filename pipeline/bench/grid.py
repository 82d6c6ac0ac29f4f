"""`python -m pipeline.bench.grid` (`make bench-grid`): batch lookup speed against a per-point STRtree loop.

Points are uniform over the two shipped districts (drawn in each district's bounding box in proportion to
its area and kept when inside the district, so the mix of whole and clipped cells is the real one). Batches
of 1k and 10k are timed one by one and the median batch gives points/s; "with codes" also builds the cell,
sub-district and kind columns that a worker reads. The baseline is what a naive worker does: one STRtree
query per point with `covers`, then the same east-then-north tie rule, over a sample of the same points
(timing a million Python-level queries would take minutes and tell nothing more). A second row uses points
uniform over the bounding boxes, about half of them outside, which exercises snapping.
Everything runs on one core in one process; figures are medians, ratios are against the same run.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
import tracemalloc
from typing import Any

from pipeline.config import one_thread_math

one_thread_math()

import numpy as np  # noqa: E402
import shapely  # noqa: E402

from grid.datum import FloatArray  # noqa: E402
from grid.index import GridIndex  # noqa: E402

BASELINE_SAMPLE = 20_000
_DISTRICT_BOXES = {  # WGS84 bounding boxes of the districts, with their areas in km² (from grid/data/areas)
    "310109": ((121.4555, 31.2439, 121.5132, 31.3181), 23.5),
    "310104": ((121.3870, 31.1027, 121.4716, 31.2222), 55.1),
}


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def random_points(index: GridIndex, n: int, seed: int = 3109, inside: bool = True) -> tuple[FloatArray, FloatArray]:
    """n points uniform over the districts (inside=True) or over their bounding boxes (inside=False)."""
    rng = np.random.default_rng(seed)
    total = sum(a for _, a in _DISTRICT_BOXES.values())
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    for (x0, y0, x1, y1), area in _DISTRICT_BOXES.values():
        want = int(round(n * area / total))
        got = 0
        while got < want:
            x = rng.uniform(x0, x1, want * 3)
            y = rng.uniform(y0, y1, want * 3)
            if inside:
                keep = index.locate_batch(x, y).distance_m == 0.0
                x, y = x[keep], y[keep]
            take = min(want - got, len(x))
            xs.append(x[:take])
            ys.append(y[:take])
            got += take
    x, y = np.concatenate(xs)[:n], np.concatenate(ys)[:n]
    order = rng.permutation(len(x))
    return x[order], y[order]


def _batch_rate(index: GridIndex, x: FloatArray, y: FloatArray, size: int, with_codes: bool) -> tuple[float, float]:
    """(median points/s over batches, overall points/s) for batches of `size`."""
    times = []
    t_all = time.perf_counter()
    for start in range(0, len(x) - size + 1, size):
        t = time.perf_counter()
        r = index.locate_batch(x[start:start + size], y[start:start + size])
        if with_codes:
            _ = (r.cell, r.subdistrict, r.grid_kind)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    return size / statistics.median(times), len(times) * size / total


def per_point_baseline(index: GridIndex, x: FloatArray, y: FloatArray) -> float:
    """Points/s of one STRtree query per point (covers + the same tie rule, no snapping)."""
    geoms = np.array([index.cell_geometry(c) for c in index.codes()])
    col_arr, row_arr = index.lattice_squares()
    cols, rows = col_arr.tolist(), row_arr.tolist()
    tree = shapely.STRtree(geoms)
    t = time.perf_counter()
    for lon, lat in zip(x.tolist(), y.tolist(), strict=True):
        hits = tree.query(shapely.Point(lon, lat), predicate="covers")
        _ = max(hits.tolist(), key=lambda i: (cols[i], rows[i])) if len(hits) else None
    return len(x) / (time.perf_counter() - t)


def run_grid_bench(n_points: int = 1_000_000, baseline_sample: int = BASELINE_SAMPLE) -> dict[str, Any]:
    """Run the grid benchmark; returns the figures (points/s, ratio, memory) as a flat dict."""
    rss0 = _rss_kib()
    t = time.perf_counter()
    index = GridIndex.load()
    load_s = time.perf_counter() - t
    index_rss_mib = (_rss_kib() - rss0) / 1024
    tracemalloc.start()  # a second load, traced (tracing slows loading, so it is not the one timed)
    GridIndex.load()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    x, y = random_points(index, n_points)
    index.locate_batch(x[:10_000], y[:10_000])  # warm caches
    out: dict[str, Any] = {"n_points": len(x), "cells": len(index), "grid_version": index.version,
                           "load_s": load_s, "index_rss_mib": index_rss_mib,
                           "index_traced_mib": traced_peak / 2**20}
    for size in (1_000, 10_000):
        out[f"batch_{size}_pps"], out[f"batch_{size}_overall_pps"] = _batch_rate(index, x, y, size, False)
        out[f"batch_{size}_codes_pps"], _ = _batch_rate(index, x, y, size, True)
    k = min(baseline_sample, len(x))
    out["baseline_sample"] = k
    out["per_point_strtree_pps"] = per_point_baseline(index, x[:k], y[:k])
    out["ratio_10k_vs_loop"] = out["batch_10000_pps"] / out["per_point_strtree_pps"]
    out["ratio_10k_codes_vs_loop"] = out["batch_10000_codes_pps"] / out["per_point_strtree_pps"]
    bx, by = random_points(index, min(n_points, 200_000), seed=104, inside=False)
    out["bbox_batch_10000_pps"], _ = _batch_rate(index, bx, by, 10_000, True)
    r = index.locate_batch(bx, by)
    out["bbox_share_outside"] = float(r.outside.mean())
    out["bbox_share_snapped"] = float(r.snapped.mean())
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 1_000_000
    r = run_grid_bench(n)
    print(f"grid bench: {r['n_points']:,} random points over Hongkou + Xuhui, {r['cells']:,} cells, "
          f"grid {r['grid_version']}, one core")
    print(f"{'case':<48}{'points/s':>14}{'vs loop':>10}")
    loop = r["per_point_strtree_pps"]
    rows = [
        (f"per-point STRtree loop ({r['baseline_sample']:,} pts)", loop),
        ("batch 1k  (median batch)", r["batch_1000_pps"]),
        ("batch 1k  + cell/subdistrict/kind columns", r["batch_1000_codes_pps"]),
        ("batch 10k (median batch)", r["batch_10000_pps"]),
        ("batch 10k + cell/subdistrict/kind columns", r["batch_10000_codes_pps"]),
        ("batch 10k overall (all 10k batches)", r["batch_10000_overall_pps"]),
        (f"batch 10k, bbox points ({r['bbox_share_outside']:.0%} outside, "
         f"{r['bbox_share_snapped']:.1%} snapped)", r["bbox_batch_10000_pps"]),
    ]
    for name, pps in rows:
        print(f"{name:<48}{pps:>14,.0f}{pps / loop:>9.1f}x")
    print(f"index memory: {r['index_rss_mib']:.1f} MiB RSS growth on load "
          f"({r['index_traced_mib']:.1f} MiB traced Python allocations); load {r['load_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
