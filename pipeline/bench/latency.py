"""The bench's `latency` phase: a paced day through a fresh worker, the time from a case's first report to its first
dispatch (README "Latency")."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from pipeline.bench.harness import (
    BenchConfig,
    BenchInput,
    isolated,
    peak_memory_mib,
    prepared,
    workers,
)
from pipeline.config import Settings, Topics
from pipeline.simulate import SimMessage, Simulation
from pipeline.simulate.config import SHANGHAI


def first_reports(sim: Simulation) -> dict[tuple[str, bytes, datetime], str]:
    """(topic, key, time) of the message that opens each case of the truth -> the case id."""
    topic = {"hotline": "raw_hotline", "patrol": "raw_patrol", "iot": "raw_iot"}
    return {(topic[i.first.source], i.first.key.encode(), i.first.at): i.case_id for i in sim.truth.incidents}


def latency_slice(inp: BenchInput, cfg: BenchConfig) -> tuple[list[SimMessage], list[SimMessage]]:
    """(paced part, full-speed part) of the input, from 08:00 Shanghai on its first day: working hours, when
    tickets and patrols open cases; readings alone make no assignment to time."""
    begin = inp.simulation.config.begin.astimezone(SHANGHAI).replace(hour=8, minute=0, second=0)
    start = next((k for k, m in enumerate(inp.messages) if m.at >= begin), 0)
    paced = int(cfg.rate * cfg.latency_seconds)
    rest = inp.messages[start:] + inp.messages[:start]
    return rest[:paced], rest[paced:paced + cfg.latency_max_events]


def wait_for_group(settings: Settings, members: int, timeout_s: float) -> bool:
    """Wait until the worker's consumer groups are Stable (joined, partitions assigned)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(client_id="cityops-bench", **settings.kafka_client_options())
    try:
        deadline = time.monotonic() + timeout_s
        wanted = set(settings.consumer_groups())
        while time.monotonic() < deadline:
            stable = set()
            for g in admin.list_groups():
                info = g if isinstance(g, dict) else {"group_id": g[0], "group_state": "Stable"}
                if info.get("group_state") == "Stable":
                    stable.add(info.get("group_id"))
            if wanted <= stable:
                return True
            time.sleep(0.5)
        return False
    finally:
        admin.close()


class AssignmentClock:
    """A consumer thread on the assignments topic: wall time each case's first dispatch arrived."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.arrived: dict[str, float] = {}
        self.stamped: dict[str, float] = {}    # the dispatch record's CreateTime: when the worker sent it
        self._stop = threading.Event()
        opts = settings.kafka_client_options()
        self.consumer = KafkaConsumer(group_id=None, fetch_max_wait_ms=10, **opts)
        topic = settings.topics.assignments
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.consumer.assign([TopicPartition(topic, p) for p in parts])
        self.consumer.seek_to_beginning()
        self.thread = threading.Thread(target=self._run, name="bench-assignments", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=50).values():
                now = time.time()
                for m in batch:
                    a = orjson.loads(m.value)
                    if a.get("kind", "dispatch") == "dispatch":
                        self.arrived.setdefault(a["case_id"], now)
                        self.stamped.setdefault(a["case_id"], m.timestamp / 1000)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        self.consumer.close()


def send_paced(producer: Any, topics: Topics, messages: Sequence[SimMessage], rate: float | None,
               opens: dict[tuple[str, bytes, datetime], str], sent: dict[str, float]) -> float:
    """Send at `rate` messages/s (None: as fast as possible); record the send time of case-opening messages.
    Returns the achieved rate."""
    t0 = time.monotonic()
    for k, m in enumerate(messages):
        if rate is not None:
            wait = t0 + k / rate - time.monotonic()
            if wait > 0.0005:
                time.sleep(wait)
        case = opens.get((m.topic, m.key or b"", m.at))
        if case is not None:
            sent.setdefault(case, time.time())
        producer.send(getattr(topics, m.topic), key=m.key, value=m.value)
    producer.flush(timeout=120)
    return len(messages) / max(1e-6, time.monotonic() - t0)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max (linear interpolation between closest ranks, as numpy's default)."""
    if not samples_ms:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def run_latency(base: Settings, inp: BenchInput, tag: str, cfg: BenchConfig) -> dict[str, Any]:
    """A ready worker; the paced part at `cfg.rate`, then the rest at full speed; latency per opened case."""
    from kafka import KafkaProducer

    paced, burst = latency_slice(inp, cfg)
    opens = first_reports(inp.simulation)
    s = isolated(base, tag)
    result: dict[str, Any] = {"rate": cfg.rate, "paced_messages": len(paced), "max_messages": len(burst)}
    with prepared(s), workers(s, 1, inp.registry, cfg.out_dir / "logs", dict(cfg.worker_env)) as procs:
        result["ready"] = wait_for_group(s, 1, cfg.timeout_s)
        time.sleep(2.0)          # the agents start after the assignment; give them a moment, unmeasured
        clock = AssignmentClock(s)
        producer = KafkaProducer(acks="all", linger_ms=1, **s.kafka_client_options())
        sent_paced: dict[str, float] = {}
        sent_max: dict[str, float] = {}
        try:
            result["paced_rate"] = send_paced(producer, s.topics, paced, cfg.rate, opens, sent_paced)
            result["max_offered_rate"] = send_paced(producer, s.topics, burst, None, opens, sent_max)
            want = set(sent_paced) | set(sent_max)
            deadline = time.monotonic() + cfg.timeout_s
            last_n, last_change = -1, time.monotonic()
            while time.monotonic() < deadline and not want <= set(clock.arrived) and procs[0].poll() is None:
                n = len(clock.arrived)
                if n != last_n:
                    last_n, last_change = n, time.monotonic()
                elif time.monotonic() - last_change > 15:
                    break            # nothing new for 15 s: the rest were merged into cases opened earlier
                time.sleep(0.2)
        finally:
            producer.close()
            clock.close()
        result["peak_rss_mib"] = peak_memory_mib(procs[0].pid)
    warm = min(sent_paced.values(), default=0.0) + 2.0     # the first 2 s warm the worker's caches
    for name, sent in (("paced", sent_paced), ("max", sent_max)):
        lat = [(clock.arrived[c] - t) * 1000 for c, t in sent.items() if c in clock.arrived
               and (name == "max" or t >= warm)]
        # where the time goes: until the worker sent the dispatch (the record's CreateTime, same clock: this
        # machine), and from there to the consumer (the producer's linger and acks, the broker, the fetch)
        worker = [(clock.stamped[c] - t) * 1000 for c, t in sent.items() if c in clock.stamped
                  and (name == "max" or t >= warm)]
        delivery = [(clock.arrived[c] - clock.stamped[c]) * 1000 for c, t in sent.items() if c in clock.stamped
                    and (name == "max" or t >= warm)]
        result[name] = {**percentiles(lat), "cases_sent": len(sent),
                        "cases_seen": sum(1 for c in sent if c in clock.arrived),
                        "to_send": percentiles(worker), "send_to_arrival": percentiles(delivery)}
    return result
