"""The bench's `notify` phase (`python -m pipeline.bench --phases notify`): delivery latency of priority-1
notifications, from the assignment on Kafka to its arrival at the receiver, at the latency phase's load.

A worker and a notifier (`cityops notify`, as `make run` starts them) run on the phase's own topics; every target
the shipped rules name is a webhook on a local receiver (`cityops notify inbox`). The day from
08:00 is sent at `--rate` events/s for `--latency-seconds` (the latency phase's paced part). A consumer thread
reads the Kafka timestamp of each priority-1 assignment (when the worker's producer sent it); the receiver, a
process of its own, logs when each notification arrives (the same machine's clock). Latency = arrival at the
receiver - the assignment's timestamp, over every priority-1 delivery (the webhook body names its assignment
and priority); a delivery's first arrival counts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.bench.harness import isolated, prepared, stop, workers
from pipeline.bench.latency import latency_slice, percentiles, send_paced, wait_for_group
from pipeline.config import ROOT, Settings, environ
from pipeline.notify.targets import names_in_rules

TARGET_P99_MS = 1000.0


class _Receiver:
    """`cityops notify inbox` as a process of its own on a free port, logging every request with its arrival time
    (its own process, so the bench's producer does not delay its answers or its clock readings)."""

    def __init__(self, log: Path, out: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.log = log
        with out.open("ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "notify", "inbox", "--port",
                                          str(self.port), "--smtp-port", "0", "--log", str(log)], cwd=ROOT,
                                         env=_environ(), stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._up():
            time.sleep(0.2)

    def _up(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/inbox", timeout=1):  # noqa: S310 (loopback)
                return True
        except OSError:
            return False

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines() if line.strip()]

    def close(self) -> None:
        stop(self.proc)


class _AssignmentTimes:
    """A consumer thread on the assignments topic: when each priority-1 assignment was written (the record's
    timestamp, set by the worker's producer as it sent it)."""

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
                for m in batch:
                    a = orjson.loads(m.value)
                    if a.get("priority") == 1:
                        self.arrived.setdefault(a["assignment_id"], m.timestamp / 1000)

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
    paced, _ = latency_slice(inp, cfg)
    s = isolated(base, tag)
    log_dir = cfg.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(cfg.out_dir / f"{tag}-inbox.ndjson", log_dir / f"{tag}-inbox.log")
    targets = targets_file(cfg.out_dir / f"{tag}-targets.yaml", f"http://127.0.0.1:{receiver.port}", s.rules_path)
    env = {**s.to_env(), "CITYOPS_NOTIFY_TARGETS": str(targets), "CITYOPS_SENSORS": str(inp.registry)}
    result: dict[str, Any] = {"rate": cfg.rate, "paced_messages": len(paced)}
    try:
        with prepared(s), workers(s, 1, inp.registry, log_dir, dict(cfg.worker_env)) as procs:
            with (log_dir / f"{tag}-notify.log").open("ab") as log:
                notifier = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "notify"], cwd=ROOT,
                                            env={**_environ(), **env}, stdout=log, stderr=subprocess.STDOUT)
            try:
                result["ready"] = wait_for_group(s, 1, cfg.timeout_s)
                time.sleep(3.0)      # the notifier joins its group and restores its (empty) ledger, unmeasured
                clock = _AssignmentTimes(s)
                from kafka import KafkaProducer

                producer = KafkaProducer(acks="all", linger_ms=1, **s.kafka_client_options())
                try:
                    result["paced_rate"] = send_paced(producer, s.topics, paced, cfg.rate, {}, {})
                    _settle(receiver, procs[0], notifier, cfg.timeout_s)
                finally:
                    producer.close()
                    clock.close()
            finally:
                stop(notifier)
    finally:
        receiver.close()
    got = receiver.received()
    first: dict[str, dict[str, Any]] = {}
    for r in got:
        first.setdefault(r["key"], r)
    lat = [(r["at"] - clock.arrived[r["body"]["assignment_id"]]) * 1000 for r in first.values()
           if r["body"].get("priority") == 1 and r["body"].get("assignment_id") in clock.arrived]
    result.update(percentiles(lat))
    result["deliveries"] = len(first)
    result["p1_assignments"] = len(clock.arrived)
    result["duplicates"] = len(got) - len(first)
    return result


def _settle(receiver: _Receiver, worker: subprocess.Popen[bytes], notifier: subprocess.Popen[bytes],
            timeout_s: float, quiet_s: float = 5.0) -> None:
    """Wait until nothing new has arrived at the receiver for `quiet_s` (or a process died, or the timeout)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and worker.poll() is None and notifier.poll() is None:
        n = receiver.log.stat().st_size if receiver.log.exists() else 0
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)


def _environ() -> dict[str, str]:
    return environ()
