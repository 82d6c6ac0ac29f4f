"""The benchmark harness's own pieces: input sizing, the case-opening map used for latency, percentiles, the
report, and (against the real broker and server) a tiny end-to-end run whose worker and naive baseline route
every case the same way."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.bench.harness import BenchConfig, BenchInput, day_config
from pipeline.bench.latency import first_reports, latency_slice, percentiles
from pipeline.bench.report import render, targets
from pipeline.bench.stages import run_chain
from pipeline.config import Settings, Topics
from pipeline.simulate import Simulation
from pipeline.simulate.config import SHANGHAI
from pipeline.simulate.world import World


def _rank_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, written out (the definition, not numpy)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_interpolate_between_ranks(values: list[float]) -> None:
    """p50 and p99 are the closest-rank interpolations of the samples; max is the largest."""
    got = percentiles(values)
    assert got["n"] == len(values)
    assert got["p50_ms"] == pytest.approx(_rank_percentile(values, 50), rel=1e-9, abs=1e-9)
    assert got["p99_ms"] == pytest.approx(_rank_percentile(values, 99), rel=1e-9, abs=1e-9)
    assert got["max_ms"] == max(values)


def test_percentiles_of_nothing_are_not_numbers() -> None:
    got = percentiles([])
    assert got["n"] == 0 and math.isnan(got["p99_ms"])


@pytest.mark.parametrize("events", [5_000, 200_000, 600_000, 2_000_000])
def test_day_config_sizes_the_day_by_its_sensors(events: int) -> None:
    """Readings (96 a sensor a day) make ~97 % of the requested volume; a district's day is 200,000 messages
    (about 2,000 sensors), and more events are more days of it, not more sensors."""
    cfg = day_config(events, seed=1)
    readings = cfg.sensors * 96 * cfg.days
    assert cfg.sensors == round(min(events, 200_000) * 0.97 / 96)
    assert cfg.days == pytest.approx(max(1.0, events / 200_000), rel=0.01)
    assert readings == pytest.approx(events * 0.97, rel=0.02)
    # a bigger district's day: more sensors, up to a whole district's 61,000, then more days
    big = day_config(events, seed=1, day_events=10_000_000)
    assert big.sensors == min(61_000, round(events * 0.97 / 96))
    assert big.sensors * 96 * big.days == pytest.approx(events * 0.97, rel=0.02)


@pytest.fixture(scope="module")
def tiny_input(tiny_sim: Simulation, tmp_path_factory: pytest.TempPathFactory) -> BenchInput:
    registry = tmp_path_factory.mktemp("bench") / "sensors.csv"
    tiny_sim.write_registry(registry)
    return BenchInput(tiny_sim, list(tiny_sim.messages()), registry)


def test_every_case_of_the_truth_is_opened_by_a_message_of_the_input(tiny_input: BenchInput) -> None:
    """The latency map finds, for each case, the one message (topic, key, time) that opens it."""
    opens = first_reports(tiny_input.simulation)
    assert len(set(opens.values())) == len(tiny_input.simulation.truth.incidents)
    present = {(m.topic, m.key or b"", m.at) for m in tiny_input.messages}
    assert set(opens) <= present


def test_latency_slice_starts_at_eight_and_keeps_order(tiny_input: BenchInput) -> None:
    """The paced part begins with the first message at or after 08:00 Shanghai; the parts follow each other."""
    cfg = BenchConfig(rate=100, latency_seconds=10, latency_max_events=500)
    paced, burst = latency_slice(tiny_input, cfg)
    assert len(paced) == 1000 and len(burst) == 500
    eight = tiny_input.simulation.config.begin.astimezone(SHANGHAI).replace(hour=8, minute=0, second=0)
    first = min(k for k, m in enumerate(tiny_input.messages) if m.at >= eight)
    assert paced[0] is tiny_input.messages[first]
    assert burst[0] is tiny_input.messages[first + 1000]


def test_the_chain_opens_exactly_the_cases_of_the_truth(tiny_input: BenchInput, world: World) -> None:
    """The in-process run that gives the expected totals makes one case per incident of the truth."""
    run, rates = run_chain(tiny_input, world)
    assert run.expected["cases"] == tiny_input.simulation.truth.counts()["cases"]
    assert run.expected["assignments"] >= run.expected["cases"]
    assert set(rates) >= {"readings", "reports", "updates", "cases"} and all(r > 0 for r in rates.values())


def _result(eps: float, naive: float, p99: float, mem: float) -> dict[str, Any]:
    run = {"label": "1 worker", "workers": 1, "events_per_s": eps, "seconds": 10.0, "peak_rss_mib": [mem],
           "finished": True, "processed": 100, "complete": True}
    return {"stamp": "x", "machine": {"cpu": "c", "cores": 2, "memory_gib": 8, "loadavg_start": (1.0, 1, 1),
                                      "kafka": "3.9.1", "clickhouse": "18.16", "python": "3.11"},
            "input": {"messages": 100, "topics": {"raw_iot": 100}, "expected": {"cases": 1, "located": 1}},
            "stages": [], "throughput": [run], "naive": {"events_per_s": naive, "seconds": 20.0, "finished": True,
                                                         "messages": 100},
            "latency": {"rate": 2000.0, "paced_rate": 1999.0, "max_offered_rate": 9000.0,
                        "paced": {"n": 50, "p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99},
                        "max": {"n": 40, "p50_ms": p99, "p99_ms": 2 * p99, "max_ms": 2 * p99}},
            "month": {"days": 30.0, "peak_rss_mib": [mem], "stored": {"cases": 5}}}


@pytest.mark.parametrize(("eps", "naive", "p99", "mem", "met"), [
    (31_000, 3_000, 90.0, 500.0, [True, True, True, True]),
    (29_000, 8_000, 300.0, 600.0, [False, False, False, False]),
])
def test_targets_compare_this_run_with_the_issue(eps: float, naive: float, p99: float, mem: float,
                                                 met: list[bool]) -> None:
    result = _result(eps, naive, p99, mem)
    got = targets(result)
    assert [t["met"] for t in got] == met
    result["targets"] = got
    text = render(result)
    assert f"{eps:,.0f}" in text and f"{eps / naive:.1f}x" in text


def test_the_paced_p99_must_also_be_a_share_of_the_full_speed_p99() -> None:
    result = _result(31_000, 3_000, 90.0, 500.0)
    result["latency"]["max"]["p99_ms"] = 120.0            # 90 ms is 75 % of it: over the issue's 60 %
    latency = [t for t in targets(result) if t["what"].startswith("p99 produce")]
    assert [t["met"] for t in latency] == [False] and "75 %" in latency[0]["measured"]


@pytest.mark.parametrize(("seconds", "met"), [(4.2, True), (10.5, False), (None, False)])
def test_recovery_and_cpu_per_message_are_printed_beside_their_targets(seconds: float | None, met: bool) -> None:
    result = _result(31_000, 3_000, 90.0, 500.0)
    result["throughput"][0]["cpu_us_per_message"] = 20.0
    result["naive"]["cpu_us_per_message"] = 150.0
    result["recovery"] = {"tail_messages": 2000, "first_output_s": 3.0, "recovery_s": seconds,
                          "peak_rss_mib": [300.0], "finished": seconds is not None}
    got = targets(result)
    recovery = [t for t in got if t["what"].startswith("current again")]
    assert [t["met"] for t in recovery] == [met]
    cpu = [t for t in got if t["what"].startswith("worker CPU per message")]
    assert len(cpu) == 1 and cpu[0]["met"] is None and "20.0 us (naive 150.0 us, 7.5x more)" in cpu[0]["measured"]
    result["targets"] = got
    text = render(result)
    assert "10.3x" in text and "20.0" in text and "current again <= 10 s" in text
    assert result["throughput"][0]["vs_naive"] == pytest.approx(31_000 / 3_000)


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_a_tiny_run_finishes_and_worker_and_naive_route_alike(tiny_input: BenchInput, world: World,
                                                               settings: Settings, tmp_path: Path) -> None:
    """End to end on the real stack: the worker stores every case, and the naive baseline, fed the same raw
    topics, dispatches every case to the same team by the same rule as the worker did."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.bench.e2e import run_naive, run_throughput

    cfg = BenchConfig(timeout_s=240, out_dir=tmp_path)
    tag = f"t{random.randrange(16**8):08x}"
    small = BenchInput(tiny_input.simulation, tiny_input.messages, tiny_input.registry)
    expected = run_chain(small, world)[0].expected
    one = run_throughput(settings, small, 1, tag + "w", cfg, expected)
    assert one["finished"] and one["complete"], one
    # every report is stored; the number of cases may differ from the in-order chain's by the few reports
    # that, consumed out of time order across topics, fall outside their neighbour's correlation window
    assert one["stored"]["events"] == expected["events"]
    assert abs(one["stored"]["cases"] - expected["cases"]) <= max(2, expected["cases"] // 50)
    routes: dict[str, tuple[str, str]] = {}
    naive = run_naive(settings, Topics.with_prefix(one["prefix"]), small, world, tag + "n", cfg, routes)
    assert naive["finished"] and naive["messages"] == len(small.messages)

    worker: dict[str, tuple[str, str]] = {}
    consumer = KafkaConsumer(group_id=None, **settings.kafka_client_options())  # type: ignore[arg-type]
    try:
        topic = Topics.with_prefix(one["prefix"]).assignments
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()])
        consumer.seek_to_beginning()
        for _ in range(40):
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    a = orjson.loads(m.value)
                    if a["kind"] == "dispatch":
                        worker.setdefault(a["case_id"], (a["team"], a["rule_id"]))
            if len(worker) >= expected["cases"]:
                break
    finally:
        consumer.close()
    # A case's id comes from the report that opened it; consumed out of time order across topics, a later
    # report can open it under its own id (see tests/integration/test_simulated_day.py). Compare the rest.
    common = set(routes) & set(worker)
    assert len(common) > len(worker) // 2
    assert {c: routes[c] for c in common} == {c: worker[c] for c in common}
    assert timedelta(0) < tiny_input.simulation.config.end - tiny_input.simulation.config.begin


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_a_tiny_run_of_the_two_process_layout_stores_everything(tiny_input: BenchInput, world: World,
                                                                settings: Settings, tmp_path: Path) -> None:
    """The bench's `make run` layout (an ingest and a cases process, one worker) goes through the input too,
    and its figures count both processes."""
    from pipeline.bench.e2e import run_throughput

    cfg = BenchConfig(timeout_s=240, out_dir=tmp_path)
    small = BenchInput(tiny_input.simulation, tiny_input.messages, tiny_input.registry)
    expected = run_chain(small, world)[0].expected
    run = run_throughput(settings, small, 1, f"t{random.randrange(16**8):08x}s", cfg, expected, ("ingest", "cases"))
    assert run["finished"] and run["complete"] and not run["worker_exit_codes"], run
    assert run["stored"]["events"] == expected["events"] and run["stages"] == ["ingest", "cases"]
    assert len(run["peak_rss_mib"]) == len(run["worker_cpu_s"]) == 2 and all(c > 0 for c in run["worker_cpu_s"])


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_a_worker_killed_with_state_is_restarted_and_catches_up_without_losing_input(
        tiny_input: BenchInput, world: World, settings: Settings, tmp_path: Path) -> None:
    """The recovery phase on the real stack: the worker goes through all but the tail, is SIGKILLed, the tail is
    produced, a new worker restores and takes it; every report of the whole input is stored once it is current."""
    from pipeline.bench.recovery import run_month

    cfg = BenchConfig(timeout_s=240, out_dir=tmp_path)
    small = BenchInput(tiny_input.simulation, tiny_input.messages, tiny_input.registry)
    expected = run_chain(small, world)[0].expected
    month, back = run_month(settings, small, f"t{random.randrange(16**8):08x}r", cfg, tail=300)
    assert month["finished"] and month["messages"] == len(small.messages) - 300, month
    assert month["cpu_us_per_message"] > 0 and month["peak_rss_mib"][0] > 0
    assert back is not None and back["finished"] and back["tail_messages"] == 300, back
    assert back["lag_at_restart"] == 300
    assert 0 < back["first_output_s"] <= back["recovery_s"]
    assert month["worker_exit_codes"] == [] and back["worker_exit_codes"] == []   # alive until measured
    assert month["stored"]["events"] == expected["events"]
