"""`make bench`'s web phase (issue #21): the web server under a district's load, with its own load client.

A worker takes the bench day's tickets, patrol reports and feedback (its readings are left out: they make no
case, and the phase measures the web, not the worker), a web server (its own process, as `make run` runs it)
shows the resulting board and feeds, and `pipeline.bench.webload` opens `STREAMS` live streams (phones and
screens) and asks for the feed and the board at `RATE` requests/s for `SECONDS`; then the feed latency of
`LATENCY_TICKETS` emergencies, from the assignment on Kafka to the team's live stream.
Target: p99 under `TARGET_P99_MS` with no errors.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from pipeline.bench import harness
from pipeline.bench.latency import wait_for_group
from pipeline.bench.webload import feed_latency, load, pct
from pipeline.config import ROOT, Settings, environ

STREAMS, RATE, SECONDS, LATENCY_TICKETS = 200, 100.0, 30.0, 20
TARGET_P99_MS = 200.0


def _users(path: Any) -> dict[str, tuple[str, str]]:
    from pipeline.web.users import User, Users, hash_password, write_users

    password = "bench-web-" + os.urandom(6).hex()
    h = hash_password(password)
    users = [User("ops", "operator", password_hash=h),
             *[User(f"{team}1", "member", team=team, password_hash=h)
               for team in ("enforcement", "handling", "supervision")]]
    write_users(path, Users({u.name: u for u in users}))
    return {u.name: (password, "operator" if u.team is None else f"member / {u.team}") for u in users}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own loopback server
            return bool(r.status == 200)
    except OSError:
        return False


def run_phase(base: Settings, inp: Any, tag: str, cfg: Any) -> dict[str, Any]:
    s = harness.isolated(base, tag)
    log_dir = cfg.out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    creds = _users(cfg.out_dir / f"{tag}-users.yaml")
    port = bench_port()
    web_url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"streams": STREAMS, "rate": RATE, "seconds": SECONDS}
    cases_input = [m for m in inp.messages if m.topic != "raw_iot"]
    with harness.prepared(s), harness.workers(s, 1, inp.registry, log_dir, dict(cfg.worker_env)):
        result["ready"] = wait_for_group(s, 1, cfg.timeout_s)
        harness.produce(s, cases_input)
        env = {**environ(), **s.to_env(), "CITYOPS_USERS": str(cfg.out_dir / f"{tag}-users.yaml"),
               "CITYOPS_SECRET": os.urandom(24).hex(), "CITYOPS_PHOTO_DIR": str(cfg.out_dir / f"{tag}-photos")}
        with (log_dir / f"{tag}-web.log").open("ab") as log:
            web = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "web", "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + cfg.timeout_s
            while time.monotonic() < deadline and not _healthy(web_url + "/healthz"):
                time.sleep(1.0)
            time.sleep(10.0)       # the worker works through the day's reports; the board fills
            figures = asyncio.run(load(web_url, creds, STREAMS, RATE, SECONDS))
            result.update(answered_per_s=len(figures.latencies) / SECONDS, errors=figures.errors,
                          stream_failures=figures.stream_failures, stream_events=figures.events,
                          p50_ms=1000 * pct(figures.latencies, 0.5), p99_ms=1000 * pct(figures.latencies, 0.99),
                          max_ms=1000 * max(figures.latencies, default=float("nan")))
            lat = feed_latency(web_url, creds, LATENCY_TICKETS, settings=s)
            result["feed_latency"] = {"n": len(lat), "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99),
                                      "max_ms": 1000 * max(lat, default=float("nan"))}
        finally:
            harness.stop(web)
    return result


def bench_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report_lines(web: dict[str, Any]) -> list[str]:
    fl = web.get("feed_latency", {})
    return ["", f"{'web: ' + str(web['streams']) + ' streams + ' + format(web['rate'], 'g') + ' req/s':<46}"
                f"{'ans/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
            f"{'feed and board requests':<46}{web['answered_per_s']:>8.1f}{web['p50_ms']:>10.0f}"
            f"{web['p99_ms']:>10.0f}{web['max_ms']:>10.0f}",
            f"{'assignment -> team feed (stream)':<46}{fl.get('n', 0):>8}{fl.get('p50_ms', float('nan')):>10.0f}"
            f"{fl.get('p99_ms', float('nan')):>10.0f}{fl.get('max_ms', float('nan')):>10.0f}"]


def target(web: dict[str, Any]) -> dict[str, Any]:
    p99 = web["p99_ms"]
    return {"what": f"web: {web['streams']} live streams + {web['rate']:g} requests/s on feed and board, p99 < "
                    f"{TARGET_P99_MS:.0f} ms, no errors",
            "measured": f"p99 {p99:,.0f} ms (p50 {web['p50_ms']:,.0f} ms), {web['answered_per_s']:.1f} answered/s, "
                        f"{web['errors']} errors",
            "met": p99 == p99 and p99 < TARGET_P99_MS and web["errors"] == 0}
