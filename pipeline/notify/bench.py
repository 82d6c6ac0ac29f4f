"""The bench's `notify` phase (`python -m pipeline.bench --phases notify`): delivery latency of priority-1
notifications, from the assignment on Kafka to its arrival at the receiver, at the latency phase's load.

A worker and a notifier (`cityops notify`, as `make run` starts them) run on the phase's own topics; every target
the shipped rules name is a webhook on a local receiver (pipeline.notify.inbox) in this process. The day from
08:00 is sent at `--rate` events/s for `--latency-seconds` (the latency phase's paced part). A consumer thread
notes when each priority-1 assignment appears on the assignments topic; the receiver notes when each of its
notifications arrives (both by this process's clock). Latency = arrival at the receiver - arrival of the
assignment on Kafka, over every priority-1 delivery (the webhook body names its assignment and priority).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import ROOT, Settings
from pipeline.notify.inbox import Inbox, serve
from pipeline.notify.targets import names_in_rules

TARGET_P99_MS = 1000.0


class _Receiver:
    """The inbox on a free port, served from its own thread."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.inbox = Inbox()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-inbox", daemon=True)
        self.thread.start()
        self.runner, _ = asyncio.run_coroutine_threadsafe(serve(self.inbox, "127.0.0.1", self.port),
                                                          self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _AssignmentTimes:
    """A consumer thread on the assignments topic: wall time each priority-1 assignment arrived."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self.consumer = KafkaConsumer(group_id=None, fetch_max_wait_ms=10, **settings.kafka_client_options())
        topic = settings.topics.assignments
        self.consumer.assign([TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()])
        self.consumer.seek_to_beginning()
        self.thread = threading.Thread(target=self._run, name="bench-assignments", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=50).values():
                now = time.time()
                for m in batch:
                    a = orjson.loads(m.value)
                    if a.get("priority") == 1:
                        self.arrived.setdefault(a["assignment_id"], now)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.consumer.close()


def targets_file(path: Path, base: str, rules: Path) -> Path:
    """Every target the rules name as a webhook on the receiver, no quiet hours, no effective rate limit."""
    from rules.engine import load_ruleset

    names = sorted(names_in_rules(load_ruleset(rules).spec))
    lines = ["version: 1", "kind: notify-targets", "defaults: {rate: 100000/min}", "targets:"]
    for name in names:
        lines += [f"  {name}:", "    channels:", f'      - {{kind: webhook, url: "{base}/webhook/{name}"}}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_phase(base: Settings, inp: Any, tag: str, cfg: Any) -> dict[str, Any]:
    """The phase (module docstring); returns p50/p99/max of priority-1 deliveries and the counts."""
    from pipeline import bench

    paced, _ = bench.latency_slice(inp, cfg)
    s = bench.isolated(base, tag)
    receiver = _Receiver()
    log_dir = cfg.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    targets = targets_file(cfg.out_dir / f"{tag}-targets.yaml", f"http://127.0.0.1:{receiver.port}", s.rules_path)
    env = {**s.to_env(), "CITYOPS_NOTIFY_TARGETS": str(targets), "CITYOPS_SENSORS": str(inp.registry)}
    result: dict[str, Any] = {"rate": cfg.rate, "paced_messages": len(paced)}
    try:
        with bench.prepared(s), bench.workers(s, 1, inp.registry, log_dir, dict(cfg.worker_env)) as procs:
            with (log_dir / f"{tag}-notify.log").open("ab") as log:
                notifier = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "notify"], cwd=ROOT,
                                            env={**_environ(), **env}, stdout=log, stderr=subprocess.STDOUT)
            try:
                result["ready"] = bench.wait_for_group(s, 1, cfg.timeout_s)
                time.sleep(3.0)      # the notifier joins its group and restores its (empty) ledger, unmeasured
                clock = _AssignmentTimes(s)
                from kafka import KafkaProducer

                producer = KafkaProducer(acks="all", linger_ms=1, **s.kafka_client_options())
                try:
                    result["paced_rate"] = bench.send_paced(producer, s.topics, paced, cfg.rate, {}, {})
                    _settle(receiver.inbox, procs[0], notifier, cfg.timeout_s)
                finally:
                    producer.close()
                    clock.close()
            finally:
                bench.stop(notifier)
    finally:
        receiver.close()
    lat = [(r.at - clock.arrived[r.body["assignment_id"]]) * 1000 for r in receiver.inbox.applied.values()
           if r.body.get("priority") == 1 and r.body.get("assignment_id") in clock.arrived]
    result.update(bench.percentiles(lat))
    result["deliveries"] = len(receiver.inbox.applied)
    result["p1_assignments"] = len(clock.arrived)
    result["duplicates"] = len(receiver.inbox.received) - len(receiver.inbox.applied)
    return result


def _settle(inbox: Inbox, worker: subprocess.Popen[bytes], notifier: subprocess.Popen[bytes], timeout_s: float,
            quiet_s: float = 5.0) -> None:
    """Wait until nothing new has arrived at the receiver for `quiet_s` (or a process died, or the timeout)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and worker.poll() is None and notifier.poll() is None:
        n = len(inbox.received)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
