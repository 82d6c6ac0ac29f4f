"""`cityops run` (behind `make run`): the whole system doing its job on a simulated district day.

Creates the topics and schema, generates a day of Hongkou (pipeline.simulate), starts a worker, the notifier (with
the local inbox its targets point at) and the web UI as child processes, feeds the day at high speed, waits until
the worker has worked through it, and prints where to look. Ctrl-C (or SIGTERM) stops the children it started;
`make run` then stops the stack it started.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.config import ROOT, Settings, environ

# the signed DingTalk robots of deploy/notify/targets.yaml (access token=secret), so the local inbox verifies them
LOCAL_DINGTALK_ROBOTS = ("district-command=SEClocal-district-command-signing-secret",
                         "subdistrict-office=SEClocal-subdistrict-office-signing-secret")


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own loopback server
                return bool(resp.status == 200)
        except OSError:
            time.sleep(0.5)
    return False


def _wait_caught_up(settings: Settings, expected_events: int, worker: subprocess.Popen[bytes],
                    timeout_s: float) -> int:
    """Wait until ClickHouse holds `expected_events` located reports (or the count stops growing)."""
    from pipeline.sink.transport import ClickHouse

    ch = ClickHouse(settings)
    deadline = time.monotonic() + timeout_s
    last, still = -1, 0
    while time.monotonic() < deadline and worker.poll() is None:
        n = int(ch.query_dicts("SELECT uniqExact(event_id) AS n FROM events")[0]["n"])
        if n >= expected_events:
            return n
        still = still + 1 if n == last else 0
        if still >= 30:
            return n
        last = n
        time.sleep(1)
    return max(last, 0)


def run(args: argparse.Namespace) -> int:
    from pipeline.runtime.topics import ensure_topics
    from pipeline.simulate.config import SimConfig
    from pipeline.simulate.generate import simulate
    from pipeline.simulate.produce import Progress, produce_simulation
    from pipeline.sink.migrate import migrate

    settings = Settings.from_env()
    run_dir = settings.var_dir / "run"
    ensure_topics(settings)
    migrate(settings)
    print(f"simulating {args.days:g} day(s) of Hongkou (seed {args.seed}, {args.sensors:,} sensors)...", flush=True)
    sim = simulate(SimConfig(days=args.days, seed=args.seed, sensors=args.sensors).checked())
    registry = run_dir / "sensors.csv"
    sim.write_registry(registry)
    (run_dir / "truth.json").write_bytes(sim.truth_json())
    env = {**environ(), **settings.to_env(), "CITYOPS_SENSORS": str(registry)}
    procs: list[subprocess.Popen[bytes]] = []

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        # the two stages as two processes: the bulk of sensor readings never delays the cases, and both cores work
        worker = _start(["worker", "--stage", "cases"], run_dir / "worker-cases.log", env)
        procs.append(worker)
        procs.append(_start(["worker", "--stage", "ingest"], run_dir / "worker-ingest.log", env))
        # the notifier delivers the rules' notify lists; the local targets point at the local inbox
        procs.append(_start(["notify", "inbox", "--log", str(run_dir / "notify-inbox.ndjson"),
                             *[f"--dingtalk={kv}" for kv in LOCAL_DINGTALK_ROBOTS]], run_dir / "notify-inbox.log",
                            env))
        procs.append(_start(["notify", "--loglevel", "info"], run_dir / "notify.log", env))
        web = _start(["web", "--host", args.host, "--port", str(args.port)], run_dir / "web.log", env)
        procs.append(web)
        base = f"http://{args.host}:{args.port}"
        if not _wait_http(f"{base}/healthz", web):
            print(f"the web UI did not come up; see {run_dir / 'web.log'}", file=sys.stderr)
            return 1
        report = produce_simulation(settings, sim, args.speed, Progress(len(sim), "feed"))
        print(f"fed {report.total:,} messages in {report.seconds:.1f} s; waiting for the worker...", flush=True)
        # every report of a problem, and the fault report of each device fault the period surely raises
        expected = sum(len(c["reports"]) for c in sim.truth.cases if c["kind"] == "problem" or c["certain"])
        stored = _wait_caught_up(settings, expected, worker, args.wait)
        if worker.poll() is not None:
            print(f"the worker stopped; see {run_dir / 'worker-cases.log'}", file=sys.stderr)
            return 1
        creds = settings.var_dir / "web" / "demo-credentials.txt"
        print("\n".join([
            "",
            "cityops is running.",
            f"  operations centre : {base}/ops",
            f"  team feed (phone) : {base}/feed   sign-in details: {creds}",
            f"  Open311 ingest    : {base}/open311/v2/services.json",
            f"  health, metrics   : {base}/healthz  {base}/metrics",
            "  reports           : .venv/bin/cityops report discovery --period day   (also: recurrence, sla, "
            "workload, health)",
            f"  this run          : {stored:,} reports stored; truth of the simulated day in {run_dir / 'truth.json'}",
            f"  notifications     : {run_dir / 'notify-inbox.ndjson'} (what the local inbox received; "
            "targets in deploy/notify/targets.yaml)",
            f"  logs              : {run_dir}/worker-ingest.log, worker-cases.log, notify.log, web.log",
            "Press Ctrl-C to stop.",
        ]), flush=True)
        if args.exit_after_feed:
            return 0
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a child process stopped; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        _stop(procs)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the worker and web UI and feed a simulated day (what `make run` does)")
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sensors", type=int, default=3000, help="sensors in the simulated district (default 3000)")
    p.add_argument("--speed", default="max", help="realtime, x60 or max (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=Settings.from_env().web_port)
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the worker to catch up")
    p.add_argument("--exit-after-feed", action="store_true", help="stop everything once the day is processed")
    p.set_defaults(func=run)
