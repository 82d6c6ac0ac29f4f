"""The bench's `stages` phase: each stage of the worker's chain timed in process on the same input, next to its naive
counterpart (README "Stages")."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np

from pipeline.bench.harness import (
    SOURCE_OF,
    STAGE_BATCH,
    BenchInput,
    isolated,
    prepared,
)
from pipeline.config import Settings


@dataclass
class StageRate:
    """One stage's rate on this run's input: the median over batches of items per CPU second (wall second for
    the sink, whose work is mostly the server's), and the naive counterpart's when there is one."""

    stage: str
    unit: str
    items: int
    rate: float
    naive_rate: float | None = None
    clock: str = "cpu"

    @property
    def ratio(self) -> float | None:
        return None if not self.naive_rate else self.rate / self.naive_rate


def median_rate(batches: Sequence[Sequence[Any]], work: Callable[[Sequence[Any]], Any],
                clock: Callable[[], float] = time.process_time) -> tuple[float, int]:
    """(median of len(batch) / seconds over the batches, items done) for `work` applied to each batch."""
    rates: list[float] = []
    done = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        t = clock()
        work(batch)
        rates.append(len(batch) / max(clock() - t, 1e-6))
        done += len(batch)
    return (statistics.median(rates) if rates else float("nan")), done


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _each(fn: Callable[[Any], Any], ignore: type[Exception]) -> Callable[[Sequence[Any]], None]:
    def run(batch: Sequence[Any]) -> None:
        for item in batch:
            with suppress(ignore):
                fn(item)
    return run


@dataclass
class StageRun:
    """The worker's pure chain over the input (what the stage timings need, and the totals a run must reach)."""

    located: list[tuple[str, bytes]] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    sink_batches: list[Any] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)


def run_chain(inp: BenchInput, world: Any) -> tuple[StageRun, dict[str, float]]:
    """The worker's chain (Ingest, then CaseStage) over the input in worker-sized batches of one topic at a
    time, timed per stage (CPU); returns what it produced and the median rates."""
    from pipeline.model.cases import CorrelationPolicy
    from pipeline.model.records import ReadingColumns, SinkBatch
    from pipeline.stages.cases import CaseBook
    from pipeline.stages.casestage import CaseStage
    from pipeline.stages.decode import default_decoder
    from pipeline.stages.ingest import Ingest
    from pipeline.stages.registry import load_registry, load_types
    from pipeline.stages.sensors import SensorState
    from pipeline.wire import Message

    ingest = Ingest(decoder=default_decoder(), grid=world.index, gazetteer=world.gazetteer,
                    sensors=load_registry(inp.registry, load_types()))
    stage = CaseStage(world.rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, SensorState] = {}
    run = StageRun()
    rates: dict[str, list[float]] = {"readings": [], "reports": [], "updates": [], "cases": []}
    events: set[str] = set()
    cases: set[str] = set()
    minutes: set[tuple[str, int]] = set()
    assignments = 0
    offset = 0
    for topic, group in groupby(inp.messages, key=lambda m: m.topic):
        msgs = []
        for m in group:
            msgs.append(Message(topic, 0, offset, m.value, m.key))
            offset += 1
        for batch in chunks(msgs, STAGE_BATCH):
            columns = ReadingColumns()
            t = time.process_time()
            # as the worker does it: by the source's path; sensor-minute rows straight into the column builders
            source = SOURCE_OF[topic]
            res, kind = ingest.take(source, batch, states, columns), source.path
            rates[kind].append(len(batch) / max(time.process_time() - t, 1e-6))
            t = time.process_time()
            out = stage.apply(res.located, books)
            if res.located:
                rates["cases"].append(len(res.located) / max(time.process_time() - t, 1e-6))
            run.located += res.located
            run.sink_batches.append(SinkBatch(readings=res.readings, reading_columns=columns))
            run.sink_batches.append(SinkBatch(cases=list(out.cases.values()), events=out.events,
                                              transitions=out.transitions))
            events.update(e.event_id for e in out.events)
            cases.update(out.cases)
            minutes.update(zip(columns.sensor_id, columns.minute, strict=True))
            assignments += len(out.assignments)
    run.expected = {"events": len(events), "cases": len(cases), "reading_minutes": len(minutes),
                    "assignments": assignments, "located": len(run.located)}
    return run, {k: statistics.median(v) for k, v in rates.items() if v}


def time_stages(inp: BenchInput, world: Any, base: Settings, tag: str) -> tuple[list[StageRate], StageRun]:
    """Every stage of the worker's chain on the input, each next to the naive baseline's way of doing it."""
    from pipeline.bench.naiveparts import NaiveDecoder, NaiveLocator
    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.stages.decode import default_decoder
    from pipeline.stages.fields import InvalidEvent
    from pipeline.stages.registry import load_registry, load_types
    from pipeline.stages.sensors import SensorState, observe
    from pipeline.wire import decode_located
    from rules.engine import DEFAULT_RULES
    from rules.naive import NaiveRuleset
    from rules.recurrence import RecurrenceHistory

    run, chain = run_chain(inp, world)
    out: list[StageRate] = []
    fast, naive = default_decoder(), NaiveDecoder(default_taxonomy())
    by_topic = {t: [m.value for m in inp.messages if m.topic == t]
                for t in ("raw_iot", "raw_hotline", "raw_patrol", "case_updates")}
    f_dec = {"raw_iot": fast.reading, "raw_hotline": fast.hotline, "raw_patrol": fast.patrol,
             "case_updates": fast.case_update}
    n_dec = {"raw_iot": naive.reading, "raw_hotline": naive.hotline, "raw_patrol": naive.patrol,
             "case_updates": naive.update}
    for topic, values in by_topic.items():
        if not values:
            continue
        rate, n = median_rate(chunks(values, STAGE_BATCH), _each(f_dec[topic], InvalidEvent))
        sample = chunks(values, STAGE_BATCH)[:10]
        nrate, _ = median_rate(sample, _each(n_dec[topic], InvalidEvent))
        out.append(StageRate(f"decode {topic.removeprefix('raw_').replace('_', '-')}", "msg", n, rate, nrate))

    registry = load_registry(inp.registry, load_types())

    def naive_readings(batch: Sequence[bytes]) -> None:
        states: dict[str, SensorState] = {}
        for raw in batch:
            with suppress(InvalidEvent):
                r = naive.reading(raw)
                observe(states.setdefault(r.sensor_id, SensorState()), r, registry.get(r.sensor_id))

    nrate, _ = median_rate(chunks(by_topic["raw_iot"], STAGE_BATCH)[:10], naive_readings)
    out.append(StageRate("readings: decode + alarm state + minute rows", "msg", len(by_topic["raw_iot"]),
                         chain.get("readings", float("nan")), nrate))
    out.append(StageRate("reports: decode + geocode + locate", "msg",
                         len(by_topic["raw_hotline"]) + len(by_topic["raw_patrol"]),
                         chain.get("reports", float("nan"))))
    items = [decode_located(v) for _, v in run.located]
    evs = [e for e in items if hasattr(e, "location")]
    pts = np.array([(e.lon, e.lat) for e in evs if e.lon is not None and e.lat is not None], dtype=np.float64)  # type: ignore[union-attr]
    if len(pts):
        tiled = np.resize(pts, (max(len(pts), 20 * STAGE_BATCH), 2))
        blocks: list[Any] = [tiled[i:i + STAGE_BATCH] for i in range(0, len(tiled), STAGE_BATCH)]
        rate, n = median_rate(blocks, lambda b: world.index.locate_batch(np.asarray(b)[:, 0], np.asarray(b)[:, 1]))
        locator = NaiveLocator(world.index)
        nrate, _ = median_rate(chunks(pts[:4000].tolist(), 500), lambda b: [locator.locate(x, y) for x, y in b])
        out.append(StageRate("locate (grid lookup)", "point", n, rate, nrate))
    out.append(StageRate("correlate + dispatch (CaseStage)", "item", len(run.located),
                         chain.get("cases", float("nan")), _naive_cases(run.located[:3000])))
    history = RecurrenceHistory()
    rules, naive_rules = world.rules, NaiveRuleset(DEFAULT_RULES)
    rate, n = median_rate(chunks(evs, STAGE_BATCH), lambda b: [rules.dispatch(e, history) for e in b])
    nrate, _ = median_rate(chunks(evs[:3000], 500), lambda b: [naive_rules.dispatch(e, history) for e in b])
    out.append(StageRate("dispatch (rules)", "event", n, rate, nrate))
    out.append(sink_rate(base, tag, run.sink_batches))
    return out, run


def _naive_cases(located: Sequence[tuple[str, bytes]]) -> float:
    """Items/CPU-s of the same CaseBooks routed by the naive rules, one item at a time (batches of 1)."""
    from pipeline.model.cases import CorrelationPolicy
    from pipeline.stages.cases import CaseBook
    from pipeline.stages.casestage import CaseStage
    from rules.engine import DEFAULT_RULES
    from rules.naive import NaiveRuleset

    stage = CaseStage(NaiveRuleset(DEFAULT_RULES), CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    rate, _ = median_rate(chunks(list(located), 500), lambda b: [stage.apply([item], books) for item in b])
    return rate


def sink_rate(base: Settings, tag: str, batches: Sequence[Any]) -> StageRate:
    """Rows/s (wall, median over writes) of `ClickHouseSink.write` on the run's own rows merged into writes of
    up to 10,000 rows (what the worker's agents hand it), and of row-dict INSERTs of 100 rows of the same
    tables (the naive way) on the first 3,000 of those rows, into a scratch database."""
    from pipeline.bench.naive import _COLUMNS, _row
    from pipeline.model.records import SinkBatch
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    merged: list[SinkBatch] = []
    for b in batches:
        if not merged or len(merged[-1]) >= 5 * STAGE_BATCH:
            merged.append(SinkBatch())
        m = merged[-1]
        m.cases += b.cases
        m.events += b.events
        m.transitions += b.transitions
        m.readings += b.readings
        m.event_columns.extend(b.event_columns)
        m.reading_columns.extend(b.reading_columns)
    merged = [m for m in merged if len(m)]
    tables = {"sensor_readings": "readings", "events": "events", "case_transitions": "transitions",
              "cases": "cases"}
    naive_rows = [(table, _row(r, _COLUMNS[table])) for m in merged[:3] for table, attr in tables.items()
                  for r in getattr(m, attr)]
    for m in merged[:3]:       # the worker's sensor-minute rows come as columns: the naive way gets them as rows
        cols = m.reading_columns.lists()
        naive_rows += [("sensor_readings", dict(zip(cols, values, strict=True)))
                       for values in zip(*cols.values(), strict=True)]
    naive_rows = naive_rows[:3000]
    with prepared(isolated(base, tag)) as s:
        sink = ClickHouseSink(s)
        rates = []
        try:
            for m in merged:
                t = time.perf_counter()
                sink.write(m)
                rates.append(len(m) / max(time.perf_counter() - t, 1e-6))
        finally:
            sink.close()
        db = ClickHouse(s)
        try:
            def insert(chunk: Sequence[tuple[str, dict[str, Any]]]) -> None:
                for table, group in groupby(chunk, key=lambda r: r[0]):
                    db.insert_dicts(table, _COLUMNS[table], [row for _, row in group])
            nrate, _ = median_rate(chunks(naive_rows, 100), insert, clock=time.perf_counter)
        finally:
            db.close()
    return StageRate("sink (ClickHouse insert)", "row", sum(len(m) for m in merged),
                     statistics.median(rates) if rates else float("nan"), nrate, clock="wall")
