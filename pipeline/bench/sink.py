"""Sink throughput: rows/s stored into the local ClickHouse from one process, per transport and batch form.

    python -m pipeline.bench.sink [--rows N] [--batch N] [--repeats N]

Timed: `ClickHouseSink.write` (de-duplication, conversion, encoding and insert) with batches of `batch_rows`
rows, in the same process against the same server, for each combination of

- transport: "http" (the sink's default: the block encoded here in the Native format, sent over the HTTP
  interface) or "native" (clickhouse-driver's columnar insert over the native protocol);
- batch form: "rows" (lists of EventRow / SensorReadingRow, which the sink takes apart column by column) or
  "columns" (EventColumns / ReadingColumns that a stage filled row by row, the fast form).

The batches are built before the clock starts (the worker builds them, not the sink); what building costs the
worker is timed separately, per row: an EventRow made against an EventColumns.append of the same values.

A naive baseline (an INSERT per 10 rows given as dicts) is timed too. Each is run `repeats` times into a
fresh database, interleaved; medians are reported. The target (issue #6) is at least 200,000 events rows/s
for the sink. Sensor-minute rows, the highest-volume table, are measured too. The machine's other load
counts: compare the ratios of one run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Literal

from pipeline.config import Settings
from pipeline.model.records import EventColumns, EventRow, SensorReadingRow, SinkBatch
from pipeline.sink.migrate import migrate
from pipeline.sink.sink import ClickHouseSink, Transport
from pipeline.sink.tables import _EVENTS, _epoch
from pipeline.sink.transport import ClickHouse

TARGET_ROWS_PER_S = 200_000
Form = Literal["rows", "columns"]


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


def batches(rows: Sequence[EventRow] | Sequence[SensorReadingRow], batch_rows: int, form: Form) -> list[SinkBatch]:
    """`rows` cut into SinkBatches of `batch_rows` rows, as rows or filled into column builders."""
    out = []
    for i in range(0, len(rows), batch_rows):
        part = rows[i:i + batch_rows]
        b = SinkBatch()
        for row in part:
            if isinstance(row, EventRow):
                if form == "rows":
                    b.events.append(row)
                else:
                    b.event_columns.add(row)
            elif form == "rows":
                b.readings.append(row)
            else:
                b.reading_columns.add(row)
        out.append(b)
    return out


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


def time_sink(settings: Settings, warm_up: SinkBatch, timed: list[SinkBatch], table: str,
              transport: Transport = "http") -> float:
    """Seconds to store the `timed` batches through the sink (after an untimed `warm_up` write that connects);
    checks that `table` then holds one row per key written."""
    s = _fresh(settings, "sink")
    sink = ClickHouseSink(s, transport=transport)
    try:
        sink.write(warm_up)
        start = time.perf_counter()
        for b in timed:
            sink.write(b)
        elapsed = time.perf_counter() - start
        check = ClickHouse(s)
        stored = check.execute(f"SELECT count() FROM {table} FINAL")[0][0]
        check.close()
        sent = sum(len(b) for b in timed)
        if stored != sent:
            raise RuntimeError(f"{transport}: {stored} rows stored in {table}, {sent} sent")
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


def time_building(rows: list[EventRow], repeats: int) -> tuple[float, float]:
    """The worker's side, seconds per row (median): making an EventRow against appending the same values
    (times as epoch seconds) to an EventColumns."""
    as_rows: list[tuple[Any, ...]] = list(map(attrgetter(*(f.name for f in fields(EventRow))), rows))
    as_columns = [(*t[:6], _epoch(r.received_at), _epoch(r.ingested_at), *t[8:])
                  for t, r in zip(as_rows, rows, strict=True)]
    row_s, col_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        made = [EventRow(*t) for t in as_rows]
        row_s.append((time.perf_counter() - start) / len(made))
        cols = EventColumns()
        append = cols.append
        start = time.perf_counter()
        for t in as_columns:
            append(*t)
        col_s.append((time.perf_counter() - start) / len(cols))
    return statistics.median(row_s), statistics.median(col_s)


def run_sink_bench(settings: Settings, n_rows: int = 500_000, batch_rows: int = 50_000, repeats: int = 3,
                   naive_rows: int = 3_000) -> dict[str, float]:
    """Measure and print; returns rows/s of each path (`<table>_<form>_<transport>`), the speedups, and
    whether the target is met (events rows/s of the fast path: columns over HTTP)."""
    events = make_events(n_rows)
    readings = make_readings(n_rows)
    runs: dict[str, tuple[SinkBatch, list[SinkBatch], str]] = {}
    for form in ("rows", "columns"):
        for name, rows, table in (("events", events, "events"), ("readings", readings, "sensor_readings")):
            runs[f"{name}_{form}"] = (batches(rows[:1000], 1000, form)[0], batches(rows, batch_rows, form), table)
    # interleaved, so that a change in the machine's load hits every path alike
    timings: dict[str, list[float]] = {}
    for _ in range(repeats):
        for key, (warm_up, timed, table) in runs.items():
            for transport in ("native", "http"):
                timings.setdefault(f"{key}_{transport}", []).append(
                    time_sink(settings, warm_up, timed, table, transport))
    result = {key: n_rows / statistics.median(seconds) for key, seconds in timings.items()}
    naive = make_events(naive_rows)
    result["naive"] = naive_rows / statistics.median(time_naive(settings, naive) for _ in range(repeats))
    row_s, col_s = time_building(events[:min(n_rows, 100_000)], repeats)
    result["build_row_us"], result["build_columns_us"] = row_s * 1e6, col_s * 1e6
    fast, old = result["events_columns_http"], result["events_rows_native"]
    result["speedup_vs_native_rows"] = fast / old
    result["speedup_vs_naive"] = fast / result["naive"]
    result["target_met"] = float(fast >= TARGET_ROWS_PER_S)
    print(f"sink bench: {n_rows:,} rows in batches of {batch_rows:,}, median of {repeats}, one process (rows/s)")
    print(f"  {'':22} {'rows, native':>14} {'rows, http':>14} {'columns, native':>16} {'columns, http':>14}")
    for name, label in (("events", "events, 18 columns"), ("readings", "sensor minutes, 7")):
        print(f"  {label:22} {result[f'{name}_rows_native']:>14,.0f} {result[f'{name}_rows_http']:>14,.0f} "
              f"{result[f'{name}_columns_native']:>16,.0f} {result[f'{name}_columns_http']:>14,.0f}")
    print(f"  naive (10 rows/INSERT) {result['naive']:,.0f} rows/s ({naive_rows:,} rows)")
    print(f"  events, columns over HTTP: x{result['speedup_vs_native_rows']:.2f} the driver with rows, "
          f"x{result['speedup_vs_naive']:.0f} naive")
    print(f"  building an events row in the worker: EventRow {result['build_row_us']:.2f} us, "
          f"EventColumns.append {result['build_columns_us']:.2f} us")
    print(f"  target {TARGET_ROWS_PER_S:,} events rows/s (columns over HTTP): "
          f"{'met' if result['target_met'] else 'NOT met'}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.sink", description=__doc__)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    r = run_sink_bench(Settings.from_env(), a.rows, a.batch, a.repeats)
    return 0 if r["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
