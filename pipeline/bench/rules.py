"""Dispatch throughput: the compiled engine against the naive interpreter, on the shipped ruleset, same run.

    python -m pipeline.bench.rules [--events N] [--runs R]

Events are a realistic synthetic mix (hotline 45 %, patrol 35 %, IoT 20 %; every taxonomy category; 3 %
unlocated; night and day; a month of earlier cases in a RecurrenceHistory). The compiled engine routes N events
in worker-sized batches of 1,000, R times (median reported), two ways: `decide_batch` (the routing itself: the
shared Decision of the winning rule, what the case stage needs, as it works out the due time itself) and
`dispatch_batch` (a new Dispatch object with its due time per event). The naive interpreter routes a slice of
the events (it is much slower) and its rate is compared with both compiled rates on the same slice, same
process. The issue #4 target is checked on the routing rate.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.model.events import Event, Location
from pipeline.model.sources import SOURCES
from pipeline.model.taxonomy import default_taxonomy
from rules.engine import DEFAULT_RULES, Dispatch, Ruleset, load_ruleset
from rules.naive import NaiveRuleset
from rules.recurrence import RecurrenceHistory

HONGKOU_SUBDISTRICTS = (
    "310109009",
    "310109010",
    "310109011",
    "310109014",
    "310109016",
    "310109017",
    "310109018",
    "310109019",
)
_GRID_KINDS = ("street", "street", "residential", "residential", "residential", "building", "village")
_SENSORS = {  # sensor type (pipeline/data/sensor_types.yaml) -> (category, range of readings that alarm)
    "elderly_button": ("E0499", (1.0, 1.0)),
    "bed_mat_inactive": ("E0499", (600.0, 900.0)),
    "gas_concentration": ("E0403", (15.0, 40.0)),
    "water_level": ("E0406", (10.0, 30.0)),
    "manhole_tilt": ("P0101", (12.0, 25.0)),
    "manhole_open": ("P0102", (1.0, 1.0)),
    "smoke": ("E0499", (10.0, 20.0)),
    "bin_fill": ("E0102", (85.0, 100.0)),
    "noise": ("E0508", (70.0, 90.0)),
    "pipe_pressure": ("E0402", (0.05, 0.15)),
    "dust_pm10": ("E0302", (150.0, 300.0)),
}
_TEXTS = (
    "",
    "",
    "门口堆放垃圾很久没人管",
    "晚上噪音扰民",
    "路面破损，老人摔倒",
    "井盖丢失了",
    "小广告贴满电线杆",
    "店家占道经营",
    "please send someone",
    "",
)
_REQUEST_TYPES = ("complaint", "complaint", "report", "help", "consult", "suggestion")


def generate_events(n: int, seed: int = 7) -> list[Event]:
    """`n` varied events of the three sources over May 2024 in Hongkou's sub-districts."""
    rnd = random.Random(seed)
    codes = default_taxonomy().codes()
    cells = [
        (f"{sub}{c:03d}{s:03d}", sub, rnd.choice(_GRID_KINDS))
        for sub in HONGKOU_SUBDISTRICTS
        for c in range(1, 11)
        for s in range(1, 16)
    ]
    locations = [Location(cell, sub, kind, "bench") for cell, sub, kind in cells]  # type: ignore[arg-type]
    start = datetime(2024, 5, 1, tzinfo=UTC)
    events: list[Event] = []
    for i in range(n):
        source = rnd.choices(SOURCES, weights=(45, 35, 20))[0]
        at = start + timedelta(seconds=rnd.randrange(31 * 86400))
        location = None if rnd.random() < 0.03 else rnd.choice(locations)
        if source == "iot":
            sensor = rnd.choice(tuple(_SENSORS))
            category, (low, high) = _SENSORS[sensor]
            events.append(
                Event(
                    f"iot:s{i}",
                    "iot",
                    category,
                    at,
                    sensor_id=f"s{i % 5000}",
                    sensor_type=sensor,
                    value=round(rnd.uniform(low, high), 1),
                    location=location,
                )
            )
        elif source == "hotline":
            events.append(
                Event(
                    f"hotline:{i}",
                    "hotline",
                    rnd.choice(codes),
                    at,
                    description=rnd.choice(_TEXTS),
                    request_type=rnd.choice(_REQUEST_TYPES),
                    location=location,
                )
            )
        else:
            events.append(
                Event(
                    f"patrol:{i}",
                    "patrol",
                    rnd.choice(codes),
                    at,
                    description=rnd.choice(_TEXTS),
                    location=location,
                )
            )
    return events


def month_of_history(events: list[Event]) -> RecurrenceHistory:
    """A history holding every located event as an earlier case (about a month of a district's cases)."""
    history = RecurrenceHistory()
    for ev in events:
        if ev.location is not None and ev.location.cell is not None:
            history.record(ev.location.cell, ev.category, ev.occurred_at)
    return history


def _rate(fn: Callable[[list[Event]], object], events: list[Event], batch: int, total: int) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second of this process) for `total` events."""
    done = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while done < total:
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch][: total - done]
            fn(chunk)
            done += len(chunk)
            if done >= total:
                break
    return total / (time.perf_counter() - wall), total / max(time.process_time() - cpu, 1e-9)


def _median(rates: list[tuple[float, float]], which: int) -> float:
    return statistics.median(r[which] for r in rates)


TARGET_EVENTS_PER_CPU_S = 500_000  # issue #4: one core, shipped ruleset
TARGET_RATIO = 5.0  # issue #4: against the naive interpreter in the same run


def run_rules_bench(
    n_events: int = 1_000_000,
    runs: int = 3,
    rules_path: Path = DEFAULT_RULES,
    naive_events: int | None = None,
) -> dict[str, float | int | str]:
    """Measure and return events/s of both engines, their ratio, and the setup (for `make bench`).

    Rates are per wall-clock second and per CPU second of this process: on a shared machine the second is
    the one-core figure (time the process spent waiting for a core is not counted). `compiled_*` is the
    routing (`decide_batch`), `dispatch_*` the same with a Dispatch object built per event, and
    `floor_events_per_cpu_s` the rate of only building those Dispatch objects (no rules at all).
    """
    pool = generate_events(min(n_events, 20_000))
    history = month_of_history(pool[: len(pool) // 2])
    ruleset: Ruleset = load_ruleset(rules_path)
    naive = NaiveRuleset(rules_path)
    n_naive = naive_events or max(1, min(n_events, 20_000))
    decision = ruleset.default.decision

    def compiled(chunk: list[Event]) -> object:
        return ruleset.decide_batch(chunk, history)

    def dispatched(chunk: list[Event]) -> object:
        return ruleset.dispatch_batch(chunk, history)

    def interpreted(chunk: list[Event]) -> object:
        return naive.dispatch_batch(chunk, history)

    def floor(chunk: list[Event]) -> object:
        fields, sla = decision._dispatch_fields, decision.sla
        out = []
        for ev in chunk:
            d = object.__new__(Dispatch)
            d.__dict__.update(fields)
            d.__dict__["due_at"] = ev.occurred_at + sla
            out.append(d)
        return out

    compiled_rates = [_rate(compiled, pool, 1000, n_events) for _ in range(runs)]
    dispatch_rates = [_rate(dispatched, pool, 1000, n_events) for _ in range(runs)]
    floor_rates = [_rate(floor, pool, 1000, n_events) for _ in range(runs)]
    # same slice, same process, back to back: the ratio is robust to how busy the machine is
    naive_rates, slice_rates, dispatch_slice_rates = [], [], []
    for _ in range(runs):
        naive_rates.append(_rate(interpreted, pool, 1000, n_naive))
        slice_rates.append(_rate(compiled, pool, 1000, n_naive))
        dispatch_slice_rates.append(_rate(dispatched, pool, 1000, n_naive))
    ratio = _median(slice_rates, 1) / _median(naive_rates, 1)  # CPU time: robust to a busy machine
    return {
        "ruleset": ruleset.version,
        "rules": len(ruleset.rules),
        "events": n_events,
        "runs": runs,
        "naive_events": n_naive,
        "compiled_events_per_s": _median(compiled_rates, 0),
        "compiled_events_per_cpu_s": _median(compiled_rates, 1),
        "dispatch_events_per_s": _median(dispatch_rates, 0),
        "dispatch_events_per_cpu_s": _median(dispatch_rates, 1),
        "floor_events_per_cpu_s": _median(floor_rates, 1),
        "compiled_slice_events_per_s": _median(slice_rates, 0),
        "naive_events_per_s": _median(naive_rates, 0),
        "compiled_slice_events_per_cpu_s": _median(slice_rates, 1),
        "dispatch_slice_events_per_cpu_s": _median(dispatch_slice_rates, 1),
        "naive_events_per_cpu_s": _median(naive_rates, 1),
        "ratio": ratio,
        "dispatch_ratio": _median(dispatch_slice_rates, 1) / _median(naive_rates, 1),
        "target_met": "yes"
        if _median(compiled_rates, 1) >= TARGET_EVENTS_PER_CPU_S and ratio >= TARGET_RATIO
        else "no",
    }


def format_result(result: dict[str, float | int | str]) -> str:
    median = f"median of {result['runs']}"
    rows = [
        ("ruleset", f"{result['ruleset']} ({result['rules']} rules)"),
        (
            f"routing (decide_batch), {result['events']:,} events ({median})",
            f"{result['compiled_events_per_s']:,.0f} events/s wall, "
            f"{result['compiled_events_per_cpu_s']:,.0f} events/CPU-s",
        ),
        (
            f"with a Dispatch per event (dispatch_batch) ({median})",
            f"{result['dispatch_events_per_s']:,.0f} events/s wall, "
            f"{result['dispatch_events_per_cpu_s']:,.0f} events/CPU-s",
        ),
        ("only building Dispatch objects (floor)", f"{result['floor_events_per_cpu_s']:,.0f} events/CPU-s"),
        (
            f"routing, {result['naive_events']:,}-event slice",
            f"{result['compiled_slice_events_per_cpu_s']:,.0f} events/CPU-s",
        ),
        ("dispatch_batch, same slice", f"{result['dispatch_slice_events_per_cpu_s']:,.0f} events/CPU-s"),
        ("naive interpreter, same slice", f"{result['naive_events_per_cpu_s']:,.0f} events/CPU-s"),
        ("ratio routing / naive (CPU time)", f"{result['ratio']:.1f}x"),
        ("ratio dispatch_batch / naive (CPU time)", f"{result['dispatch_ratio']:.1f}x"),
        (
            f"target: routing >= {TARGET_EVENTS_PER_CPU_S:,}/CPU-s and >= {TARGET_RATIO:g}x naive",
            str(result["target_met"]),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.rules", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    args = parser.parse_args(argv)
    print(format_result(run_rules_bench(args.events, args.runs, args.rules)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
