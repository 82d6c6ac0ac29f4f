"""`cityops run` (behind `make run`): the whole system doing its job on a living simulated district.

Creates the topics and schema, plans yesterday and today of Hongkou (pipeline.simulate.live), starts the worker's
two stages (on the `live` clock: the stream clock through the backlog, the wall clock once caught up), the
notifier (with the local inbox its targets point at) and the web UI as child processes, feeds yesterday and today
until now at full speed, waits until the worker has worked through it, prints where to look, and then keeps the
district living in real time. Ctrl-C (or SIGTERM) stops the feed and the children it started; `make run` then
stops the stack it started. `--no-live` feeds `--days` simulated days at `--speed` instead, and stops feeding.
`--workers N` starts N processes of each stage (one consumer group per stage shares the partitions); with
CITYOPS_CLUSTER set (`make cluster-run`, deploy/local/cluster.sh) the schema is the cluster's and every reader (web
UI, reports) reads its Distributed tables through the node the settings name.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
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


def _wait_caught_up(settings: Settings, expected_events: int, workers: list[subprocess.Popen[bytes]],
                    timeout_s: float) -> int:
    """Wait until ClickHouse holds `expected_events` located reports (or the count stops growing)."""
    from pipeline.sink.transport import ClickHouse

    ch = ClickHouse(settings)
    deadline = time.monotonic() + timeout_s
    last, still = -1, 0
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        n = int(ch.query_dicts("SELECT uniqExact(event_id) AS n FROM events")[0]["n"])
        if n >= expected_events:
            return n
        still = still + 1 if n == last else 0
        if still >= 30:
            return n
        last = n
        time.sleep(1)
    return max(last, 0)


def worker_logs(stage: str, n: int) -> list[str]:
    """The log file names of a stage's `n` worker processes under the run's directory."""
    return [f"worker-{stage}.log"] if n == 1 else [f"worker-{stage}-{i + 1}.log" for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from pipeline.runtime.topics import ensure_topics
    from pipeline.simulate.config import SimConfig
    from pipeline.simulate.generate import simulate
    from pipeline.simulate.live import LiveDistrict, LiveStatus, produce_live
    from pipeline.simulate.produce import Progress, produce_simulation
    from pipeline.sink.migrate import migrate

    if args.workers < 1:
        print("--workers: at least 1 process per stage", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    run_dir = settings.var_dir / ("cluster-run" if settings.clickhouse_cluster else "run")
    ensure_topics(settings)
    migrate(settings, cluster=settings.clickhouse_cluster)
    registry = run_dir / "sensors.csv"
    live = not args.no_live
    district = None
    if live:
        print(f"planning yesterday and today of Hongkou (seed {args.seed}, {args.sensors:,} sensors)...", flush=True)
        district = LiveDistrict(SimConfig(seed=args.seed, sensors=args.sensors), registry=registry)
        sim = district.first()
    else:
        print(f"simulating {args.days:g} day(s) of Hongkou (seed {args.seed}, {args.sensors:,} sensors)...",
              flush=True)
        sim = simulate(SimConfig(days=args.days, seed=args.seed, sensors=args.sensors).checked())
        sim.write_registry(registry)
    (run_dir / "truth.json").write_bytes(sim.truth_json())
    # live: the stream clock through yesterday's backlog, the wall clock once caught up (docs/cases.md §7.2)
    env = {**environ(), **settings.to_env(), "CITYOPS_SENSORS": str(registry)}
    if live and "CITYOPS_SLA_CLOCK" not in environ():
        env["CITYOPS_SLA_CLOCK"] = "live"
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    feeder: threading.Thread | None = None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        # the two stages as processes of their own: the bulk of sensor readings never delays the cases, and both
        # cores work; --workers N: N of each, sharing their stage's partitions
        workers = [_start(["worker", "--stage", stage], run_dir / log, env)
                   for stage in ("cases", "ingest") for log in worker_logs(stage, args.workers)]
        procs.extend(workers)
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
        started = time.monotonic()
        status = LiveStatus()
        if district is not None:
            print("feeding yesterday and today until now at full speed...", flush=True)
            caught_up = threading.Event()
            failed: list[BaseException] = []

            def feed() -> None:
                try:
                    produce_live(settings, district, stop, status, on_caught_up=lambda s: caught_up.set())
                except BaseException as err:  # reported by the main thread
                    failed.append(err)
                    caught_up.set()

            feeder = threading.Thread(target=feed, name="cityops-live-feed", daemon=True)
            feeder.start()
            while not caught_up.wait(5):
                print(f"  fed {status.sent:,} messages, simulated time "
                      f"{status.last_at.astimezone().strftime('%Y-%m-%d %H:%M') if status.last_at else '-'}",
                      flush=True)
            if failed:
                print(f"feeding failed: {failed[0]!r}", file=sys.stderr)
                return 1
            cut = status.caught_up_at or datetime.now(UTC)
            print(f"fed {status.sent:,} messages (yesterday and today until {cut.astimezone():%H:%M}) in "
                  f"{time.monotonic() - started:.1f} s; waiting for the worker...", flush=True)
        else:
            report = produce_simulation(settings, sim, args.speed, Progress(len(sim), "feed"))
            print(f"fed {report.total:,} messages in {report.seconds:.1f} s; waiting for the worker...", flush=True)
            cut = datetime.max.replace(tzinfo=UTC)
        # every report of a problem, and the fault report of each device fault the period surely raises, made by now
        expected = sum(1 for c in sim.truth.cases if c["kind"] == "problem" or c["certain"]
                       for r in c["reports"] if datetime.fromisoformat(r["at"].replace("Z", "+00:00")) <= cut)
        stored = _wait_caught_up(settings, expected, workers, args.wait)
        if any(w.poll() is not None for w in workers):
            print(f"a worker stopped; see {run_dir}/worker-*.log", file=sys.stderr)
            return 1
        creds = settings.var_dir / "web" / "demo-credentials.txt"
        print("\n".join([
            "",
            "cityops is running." + (" The district is live: new tickets, patrol reports, sensor alarms and the "
                                     "teams' work arrive in real time." if live else ""),
            f"  operations centre : {base}/ops",
            f"  wall screen       : {base}/wall",
            f"  team feed (phone) : {base}/feed   sign-in details: {creds}",
            f"  Open311 ingest    : {base}/open311/v2/services.json",
            f"  health, metrics   : {base}/healthz  {base}/metrics",
            "  reports           : .venv/bin/cityops report discovery --period day   (also: recurrence, sla, "
            "workload, health)",
            f"  this run          : {stored:,} reports stored; truth of the planned days in {run_dir / 'truth.json'}"
            + (f"; on the cluster `{settings.clickhouse_cluster}`, {args.workers} worker(s) per stage"
               if settings.clickhouse_cluster else ""),
            f"  notifications     : {run_dir / 'notify-inbox.ndjson'} (what the local inbox received; "
            "targets in deploy/notify/targets.yaml)",
            f"  logs              : {run_dir}/{', '.join(worker_logs('ingest', args.workers))}, "
            f"{', '.join(worker_logs('cases', args.workers))}, notify.log, web.log",
            "Press Ctrl-C to stop.",
        ]), flush=True)
        if args.exit_after_feed:
            return 0
        last_note = time.monotonic()
        while all(p.poll() is None for p in procs):
            if feeder is not None and not feeder.is_alive():
                print("the live feed stopped", file=sys.stderr)
                return 1
            if feeder is not None and time.monotonic() - last_note >= 300:
                last_note = time.monotonic()
                print(f"live: {status.sent:,} messages sent; the last at "
                      f"{status.last_at.astimezone():%H:%M:%S}" if status.last_at else "live", flush=True)
            time.sleep(1)
        print("a child process stopped; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(timeout=30)
        _stop(procs)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the worker and web UI and feed a simulated day (what `make run` does)")
    p.add_argument("--no-live", action="store_true",
                   help="feed --days simulated days at --speed and stop feeding (the default is a live district: "
                        "yesterday and today so far at full speed, then real time)")
    p.add_argument("--days", type=float, default=1.0, help="with --no-live: days to simulate (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sensors", type=int, default=3000, help="sensors in the simulated district (default 3000)")
    p.add_argument("--speed", default="max", help="with --no-live: realtime, x60 or max (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=Settings.from_env().web_port)
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the worker to catch up")
    p.add_argument("--exit-after-feed", action="store_true", help="stop everything once the day is processed")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes per stage (ingest, cases); `make cluster-run` starts 2 (default 1)")
    p.set_defaults(func=run)
