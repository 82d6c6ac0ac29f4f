"""The bench's `month` and `recovery` phases (issue #23): a worker fed a month of a district's state, its peak memory,
then killed (SIGKILL) and restarted, and how long until the board is current again.

The month's input is produced but for its last `RECOVERY_TAIL` messages; one worker goes through it (its peak
memory is the month figure); it is killed with SIGKILL once its group committed everything, the held-back tail
is produced (new input that arrived while it was down), and a new worker is started on the same topics, group and
database. From the moment the new process is started:

- `first_output_s`: until the first new output is seen (a row stored in ClickHouse or a message on an output
  topic): the worker restored its state from the changelog topics and processes new input;
- `recovery_s`: until the group's lag on every input topic is zero again (the tail committed): current again.

Both are seen within 0.1 s of happening.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from pipeline.bench.harness import (
    BenchConfig,
    BenchInput,
    cpu_seconds,
    isolated,
    peak_memory_mib,
    prepared,
    produce,
    workers,
)
from pipeline.bench.watch import Watcher, distinct_counts, retrying
from pipeline.config import Settings

TARGET_RECOVERY_S = 10.0
RECOVERY_TAIL = 2000                    # messages held back from the month and produced while the worker is down


def _outputs(s: Settings) -> list[str]:
    t = s.topics
    return [t.assignments, t.case_state, t.located, t.deadletter, t.unlocated]


def run_month(base: Settings, inp: BenchInput, tag: str, cfg: BenchConfig, recovery: bool = True,
              tail: int = RECOVERY_TAIL) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the month's throughput figures, the recovery figures or None): see the module docstring."""
    s = isolated(base, tag)
    tail = min(tail, len(inp.messages) // 10) if recovery else 0
    head, rest = inp.messages[:len(inp.messages) - tail], inp.messages[len(inp.messages) - tail:]
    timeout = max(cfg.timeout_s, len(inp.messages) / 5000)   # a month is many times a day (5,000 messages/s)
    env = dict(cfg.worker_env)
    log_dir = cfg.out_dir / "logs"
    with prepared(s):
        produce_s = produce(s, head)
        watcher = Watcher(s, s.consumer_groups(), _outputs(s))
        try:
            with workers(s, 1, inp.registry, log_dir, env) as procs:
                done = watcher.watch(timeout, alive=lambda: all(p.poll() is None for p in procs),
                                     probe=lambda: [cpu_seconds(p.pid) for p in procs])
                memory = [peak_memory_mib(p.pid) for p in procs]
                cpu = [b - a for a, b in zip(done.probe_first or [], done.probe_last or [], strict=False)]
                exits = [p.poll() for p in procs]
                if recovery and done.finished:
                    for p in procs:
                        p.kill()            # SIGKILL: no last checkpoint, no leaving the group
                        p.wait()
            processed = len(head) if done.finished else retrying(watcher.processed)
            back = (_restart(s, inp, rest, watcher, cfg, log_dir, env)
                    if recovery and done.finished else None)
        finally:
            watcher.close()
        stored = distinct_counts(s)
    month = {"workers": 1, "stages": ["all"], "messages": len(head), "processed": processed,
             "produce_s": produce_s, "seconds": done.seconds, "events_per_s": processed / done.seconds,
             "finished": done.finished, "peak_rss_mib": memory, "worker_cpu_s": cpu,
             "cpu_us_per_message": sum(cpu) / processed * 1e6 if processed and cpu else float("nan"),
             "stored": stored, "prefix": s.topic_prefix, "worker_exit_codes": [e for e in exits if e is not None]}
    return month, back


def _restart(s: Settings, inp: BenchInput, rest: list[Any], watcher: Watcher, cfg: BenchConfig, log_dir: Any,
             env: dict[str, str]) -> dict[str, Any]:
    """Produce the held-back `rest`, start a new worker, time it back to current (module docstring)."""
    produce(s, rest)
    before = watcher.snapshot()
    lag_before = retrying(watcher.lag)
    first_at: float | None = None
    zero_at: float | None = None
    deadline = time.monotonic() + max(cfg.timeout_s, 120.0)
    with workers(s, 1, inp.registry, log_dir, env) as procs:
        started = time.monotonic()
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
            now = time.monotonic()
            if first_at is None and watcher.snapshot(before) != before:
                first_at = now
            lag: int | None = None
            with suppress(Exception):
                lag = watcher.lag()
            if first_at is not None and lag == 0:
                zero_at = now
                break
        memory = [peak_memory_mib(p.pid) for p in procs]
        exits = [p.poll() for p in procs]
    return {"tail_messages": len(rest), "lag_at_restart": lag_before,
            "first_output_s": None if first_at is None else first_at - started,
            "recovery_s": None if zero_at is None else zero_at - started,
            "finished": zero_at is not None, "peak_rss_mib": memory,
            "worker_exit_codes": [e for e in exits if e is not None]}

