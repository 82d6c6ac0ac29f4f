"""Sink throughput: rows/s stored into the local ClickHouse from one process, old path against new.

    python -m pipeline.sink_bench [--rows N] [--batch N] [--repeats N]

Timed: `ClickHouseSink.write` (de-duplication, row→column conversion, encoding and insert) with batches of
`batch_rows` rows, once per transport, in the same process against the same server:

- "http" (the sink's default): the block encoded here in the Native format, sent over the HTTP interface;
- "native": the previous path, clickhouse-driver's columnar insert over the native protocol.

A naive baseline (an INSERT per 10 rows given as dicts) is timed too. Each is run `repeats` times into a
fresh database; medians are reported. The target (issue #6) is at least 200,000 events rows/s for the sink.
Sensor-minute rows, the highest-volume table, are measured too. The machine's other load counts: compare
the ratios of one run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import cast

from pipeline.config import Settings
from pipeline.migrate import migrate
from pipeline.records import EventRow, SensorReadingRow, SinkBatch
from pipeline.sink import _EVENTS, ClickHouse, ClickHouseSink, Transport, _epoch

TARGET_ROWS_PER_S = 200_000


def make_events(n: int, offset: int = 0) -> list[EventRow]:
    """Realistic event rows: three sources, 12 cells over 3 sub-districts, a short masked description."""
    t0 = datetime(2024, 5, 1)
    sources = ("hotline", "patrol", "iot")
    out = []
    for i in range(offset, offset + n):
        sd = f"31010900{i % 3 + 1}"
        out.append(EventRow(
            event_id=f"{sources[i % 3]}:{i:09d}", source=sources[i % 3], case_id=f"case-{i // 3:09d}",
            category=("E0501", "P0101", "E0102")[i % 3], cell=f"{sd}{i % 4 + 1:03d}{i % 7 + 1:03d}",
            subdistrict=sd, received_at=t0 + timedelta(seconds=i), ingested_at=t0 + timedelta(seconds=i + 2),
            lon=121.48 + (i % 100) * 1e-4, lat=31.26 + (i % 77) * 1e-4, snapped=False, merged=i % 5 == 0,
            grid_version="hongkou-2024.1", grid_kind="street", request_type="complaint" if i % 3 == 0 else "",
            sensor_type="manhole_tilt" if i % 3 == 2 else "", value=3.5 if i % 3 == 2 else None,
            description="占道经营 near gate, caller ***masked***" if i % 3 == 0 else ""))
    return out


def make_readings(n: int) -> list[SensorReadingRow]:
    """Per-sensor-minute aggregates: the high-volume table (tens of thousands of sensors, a row a minute)."""
    t0 = datetime(2024, 5, 1)
    return [SensorReadingRow(f"HK-{i % 61_000:05d}", ("manhole_tilt", "water_level", "smoke")[i % 3],
                             t0 + timedelta(minutes=i // 61_000), 1 + i % 6, 0.5 * (i % 40), 0.5 * (i % 50),
                             f"310109009{i % 4 + 1:03d}{i % 7 + 1:03d}")
            for i in range(n)]


def _fresh(settings: Settings, tag: str) -> Settings:
    s = replace(settings, clickhouse_database=f"{settings.clickhouse_database}_bench_{tag}")
    admin = ClickHouse(s, database="default")
    admin.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
    admin.close()
    migrate(s)
    return s


def _drop(settings: Settings) -> None:
    admin = ClickHouse(settings, database="default")
    admin.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    admin.close()


def time_sink(settings: Settings, rows: list[EventRow] | list[SensorReadingRow], batch_rows: int,
              transport: Transport = "http") -> float:
    """Seconds to store `rows` through the sink in batches of `batch_rows`; checks that every row arrived."""
    s = _fresh(settings, "sink")
    sink = ClickHouseSink(s, transport=transport)
    events = isinstance(rows[0], EventRow)

    def batch(part: list[EventRow] | list[SensorReadingRow]) -> SinkBatch:
        if events:
            return SinkBatch(events=cast(list[EventRow], part))
        return SinkBatch(readings=cast(list[SensorReadingRow], part))

    try:
        sink.write(batch(rows[:1000]))      # connect and warm up, not timed
        start = time.perf_counter()
        for i in range(0, len(rows), batch_rows):
            sink.write(batch(rows[i:i + batch_rows]))
        elapsed = time.perf_counter() - start
        table = "events" if events else "sensor_readings"
        check = ClickHouse(s)
        stored = check.execute(f"SELECT count() FROM {table} FINAL")[0][0]
        check.close()
        if stored != len(rows):
            raise RuntimeError(f"{transport}: {stored} rows stored in {table}, {len(rows)} sent")
        return elapsed
    finally:
        sink.close()
        _drop(s)


def time_naive(settings: Settings, rows: list[EventRow], per_insert: int = 10) -> float:
    s = _fresh(settings, "naive")
    db = ClickHouse(s)
    try:
        def as_dict(r: EventRow) -> dict[str, object]:
            d = asdict(r)
            d.update(received_at=_epoch(r.received_at), ingested_at=_epoch(r.ingested_at),
                     snapped=int(r.snapped), merged=int(r.merged))
            return d

        db.insert_dicts("events", _EVENTS.columns, [as_dict(r) for r in rows[:per_insert]])
        start = time.perf_counter()
        for i in range(0, len(rows), per_insert):
            db.insert_dicts("events", _EVENTS.columns, [as_dict(r) for r in rows[i:i + per_insert]])
        return time.perf_counter() - start
    finally:
        db.close()
        _drop(s)


def run_sink_bench(settings: Settings, n_rows: int = 500_000, batch_rows: int = 50_000, repeats: int = 3,
                   naive_rows: int = 3_000) -> dict[str, float]:
    """Measure and print; returns rows/s of each path, the new path's speedups, and whether the target is met."""
    rows = make_events(n_rows)
    naive = make_events(naive_rows)
    readings = make_readings(n_rows)
    result: dict[str, float] = {}
    # interleaved, so that a change in the machine's load hits both paths alike
    timings: dict[str, list[float]] = {k: [] for k in ("http", "native", "readings_http", "readings_native")}
    for _ in range(repeats):
        for transport in ("native", "http"):
            timings[transport].append(time_sink(settings, rows, batch_rows, transport))
            timings[f"readings_{transport}"].append(time_sink(settings, readings, batch_rows, transport))
    for key, seconds in timings.items():
        result[key] = n_rows / statistics.median(seconds)
    naive_s = statistics.median(time_naive(settings, naive) for _ in range(repeats))
    result["naive"] = naive_rows / naive_s
    result["speedup_vs_native"] = result["http"] / result["native"]
    result["readings_speedup_vs_native"] = result["readings_http"] / result["readings_native"]
    result["speedup_vs_naive"] = result["http"] / result["naive"]
    result["target_met"] = float(result["http"] >= TARGET_ROWS_PER_S)
    print(f"sink bench: {n_rows:,} rows in batches of {batch_rows:,}, median of {repeats}, one process")
    print(f"  events, 18 columns:  new (Native over HTTP) {result['http']:>10,.0f} rows/s   "
          f"old (driver, native protocol) {result['native']:>10,.0f} rows/s   x{result['speedup_vs_native']:.2f}")
    print(f"  sensor readings, 7:  new (Native over HTTP) {result['readings_http']:>10,.0f} rows/s   "
          f"old (driver, native protocol) {result['readings_native']:>10,.0f} rows/s   "
          f"x{result['readings_speedup_vs_native']:.2f}")
    print(f"  naive (10 rows/INSERT) {result['naive']:>10,.0f} rows/s ({naive_rows:,} rows); new path "
          f"x{result['speedup_vs_naive']:.0f}")
    print(f"  target {TARGET_ROWS_PER_S:,} events rows/s: {'met' if result['target_met'] else 'NOT met'}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.sink_bench", description=__doc__)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    r = run_sink_bench(Settings.from_env(), a.rows, a.batch, a.repeats)
    return 0 if r["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
