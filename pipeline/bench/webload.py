"""The web under a district's load (issue #21), and how fast an assignment reaches a team's feed.

    python -m pipeline.bench.webload --base http://127.0.0.1:8080 --credentials var/web/demo-credentials.txt \\
        [--streams 200] [--rate 100] [--seconds 60] [--latency-tickets 20]

Against a running web server (`make run`): it signs in the demo users (bearer tokens), opens `--streams` live
streams (`/api/stream`: four phones of the teams' feeds to one operator screen), and asks for the feed and the
board at a fixed `--rate` (an open loop: a request leaves on schedule whether or not the earlier ones have
answered, so a slow server shows up as latency, not as a lower rate), for `--seconds`. It prints requests/s
answered, p50 / p99 / max latency and errors, and the events the streams received.

With `--latency-tickets N` it then produces N hotline tickets to Kafka (one every 2 s, at places of the
district) and measures, for each, the time from its assignment on `cityops.assignments` (the Kafka timestamp of
the dispatch) to the moment a stream of the team it was dispatched to carried the case: the feed latency.
No figure is asserted: the bench prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

TEAMS = ("enforcement", "handling", "supervision")
# emergencies (the shipped rules: handling, priority 1), so that a new case is among the most urgent of the feed
EMERGENCIES = ("E0401", "E0402", "E0404", "E0405", "E0406", "E0407", "E0408")


def spots(n: int, rng: random.Random, spacing_m: float = 450.0) -> list[tuple[float, float]]:
    """`n` points of Hongkou's cells at least `spacing_m` apart (beyond the emergencies' 300 m merge radius),
    in a random order: each run's tickets open new cases."""
    from grid import CELLS_FILE

    doc = orjson.loads(Path(CELLS_FILE).read_bytes())
    centres = []
    for f in doc["features"]:
        if not str(f["properties"]["code"]).startswith("310109"):
            continue
        ring = f["geometry"]["coordinates"][0] if f["geometry"]["type"] == "Polygon" else \
            f["geometry"]["coordinates"][0][0]
        centres.append((sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)))
    rng.shuffle(centres)
    chosen: list[tuple[float, float]] = []
    for lon, lat in centres:
        if all(((lon - x) * 95_000) ** 2 + ((lat - y) * 111_000) ** 2 >= spacing_m ** 2 for x, y in chosen):
            chosen.append((round(lon, 6), round(lat, 6)))
            if len(chosen) == n:
                break
    return chosen


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    events: int = 0
    stream_failures: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def read_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (password, role/team text) from the demo credentials file `cityops run` writes."""
    out: dict[str, tuple[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[1].startswith("api_key="):
            out[parts[0]] = (parts[1], " ".join(parts[2:]))
    return out


async def token(session: aiohttp.ClientSession, base: str, name: str, password: str) -> str:
    async with session.post(base + "/api/token", json={"name": name, "password": password}) as r:
        if r.status != 200:
            raise SystemExit(f"sign-in of {name} failed: HTTP {r.status} {await r.text()}")
        return str((await r.json())["token"])


async def stream(session: aiohttp.ClientSession, base: str, bearer: str, figures: Figures, stop: asyncio.Event,
                 on_event: Any = None) -> None:
    try:
        async with session.get(base + "/api/stream", headers={"Authorization": f"Bearer {bearer}"},
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as r:
            if r.status != 200:
                figures.stream_failures += 1
                return
            data: list[bytes] = []
            async for line in r.content:
                if stop.is_set():
                    return
                if line.startswith(b"data: "):
                    data.append(line[6:])
                elif line == b"\n" and data:
                    figures.events += 1
                    if on_event is not None:
                        on_event(b"".join(data))
                    data = []
    except (TimeoutError, aiohttp.ClientError) as err:
        if not stop.is_set():
            figures.stream_failures += 1
            figures.first_error = figures.first_error or f"stream: {type(err).__name__}"


async def one(session: aiohttp.ClientSession, url: str, bearer: str, figures: Figures) -> None:
    started = time.perf_counter()
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {bearer}"}) as r:
            await r.read()
            if r.status != 200:
                figures.error(f"{url}: HTTP {r.status}")
                return
    except (TimeoutError, aiohttp.ClientError) as err:
        figures.error(f"{url}: {type(err).__name__}")
        return
    figures.latencies.append(time.perf_counter() - started)


async def load(base: str, creds: dict[str, tuple[str, str]], streams: int, rate: float, seconds: float) -> Figures:
    figures = Figures()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        members = {team: next(n for n, (_, role) in creds.items() if role.endswith(team)) for team in TEAMS}
        tokens = {name: await token(session, base, name, creds[name][0]) for name in ["ops", *members.values()]}
        stop = asyncio.Event()
        listeners = []
        for i in range(streams):
            who = "ops" if i % 5 == 4 else members[TEAMS[i % 3]]
            listeners.append(asyncio.create_task(stream(session, base, tokens[who], figures, stop)))
        await asyncio.sleep(2.0)                  # the streams are open
        pending: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - started < seconds:
            due = started + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            if n % 2:
                url, who = base + "/api/board", "ops"
            else:
                url, who = base + "/api/feed", members[TEAMS[(n // 2) % 3]]
            task = asyncio.create_task(one(session, url, tokens[who], figures))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        if pending:
            await asyncio.wait(pending, timeout=30)
        elapsed = time.perf_counter() - started
        stop.set()
        for t in listeners:
            t.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    figures.first_error = figures.first_error or ""
    print(f"web load: {streams} live streams open, {n} requests in {elapsed:.1f} s "
          f"({len(figures.latencies) / elapsed:.1f} answered/s of {rate:g}/s asked): p50 "
          f"{1000 * pct(figures.latencies, 0.5):.0f} ms, p99 {1000 * pct(figures.latencies, 0.99):.0f} ms, "
          f"max {1000 * max(figures.latencies, default=float('nan')):.0f} ms, errors {figures.errors}"
          f"{' (' + figures.first_error + ')' if figures.first_error else ''}; stream events {figures.events:,}, "
          f"stream failures {figures.stream_failures}", flush=True)
    return figures


def feed_latency(base: str, creds: dict[str, tuple[str, str]], tickets: int,
                 settings: Any = None) -> list[float]:
    """Seconds from each ticket's dispatch (its assignment's Kafka timestamp) to its case in the team's stream."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from pipeline.config import Settings

    settings = settings or Settings.from_env()
    run = uuid.uuid4().hex[:8]
    seen_at: dict[str, float] = {}          # case id -> when a stream of its team first carried it
    dispatched: dict[str, tuple[str, float]] = {}   # case id -> (team, assignment timestamp)
    lock = threading.Lock()

    def on_feed(raw: bytes) -> None:
        now = time.time()
        for c in orjson.loads(raw).get("cases", ()):
            with lock:
                seen_at.setdefault(c["case_id"], now)

    async def listen(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            members = {team: next(n for n, (_, role) in creds.items() if role.endswith(team)) for team in TEAMS}
            figures = Figures()
            tasks = [asyncio.create_task(stream(session, base, await token(session, base, m, creds[m][0]), figures,
                                                stop, on_feed)) for m in members.values()]
            await stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    loop = asyncio.new_event_loop()
    stop_event: asyncio.Event | None = None

    def run_listener() -> None:
        nonlocal stop_event
        asyncio.set_event_loop(loop)
        stop_event = asyncio.Event()
        loop.run_until_complete(listen(stop_event))

    thread = threading.Thread(target=run_listener, daemon=True)
    thread.start()
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    parts = [TopicPartition(settings.topics.assignments, p)
             for p in consumer.partitions_for_topic(settings.topics.assignments) or ()]
    consumer.assign(parts)
    consumer.seek_to_end()
    producer = KafkaProducer(acks="all", **settings.kafka_client_options())
    time.sleep(3)                           # the streams are open
    rng = random.Random()
    places = spots(tickets, rng)
    for i, (lon, lat) in enumerate(places):
        tid = f"LAT-{run}-{i}"
        msg = {"service_request_id": tid, "requested_datetime": datetime.now(UTC).isoformat(),
               "service_code": rng.choice(EMERGENCIES), "lat": lat, "long": lon, "description": "bench: feed latency"}
        producer.send(settings.topics.raw_hotline, key=tid.encode(), value=orjson.dumps(msg))
        producer.flush()
        deadline = time.time() + 2.0
        while time.time() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    a = orjson.loads(rec.value)
                    if a.get("kind") == "dispatch":
                        dispatched.setdefault(a["case_id"], (a["team"], rec.timestamp / 1000))
            time.sleep(0.05)
    deadline = time.time() + 20
    while time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for rec in records:
                a = orjson.loads(rec.value)
                if a.get("kind") == "dispatch":
                    dispatched.setdefault(a["case_id"], (a["team"], rec.timestamp / 1000))
    producer.close()
    consumer.close()
    with lock:
        ours = set(dispatched)
        out = [seen_at[c] - dispatched[c][1] for c in ours if c in seen_at and dispatched[c][0] in TEAMS]
    if stop_event is not None:
        loop.call_soon_threadsafe(stop_event.set)
    thread.join(timeout=10)
    print(f"feed latency: {len(out)} dispatches seen in a team's stream of {len(ours)} dispatched while the bench "
          f"ran: p50 {1000 * pct(out, 0.5):.0f} ms, p99 {1000 * pct(out, 0.99):.0f} ms, "
          f"max {1000 * max(out, default=float('nan')):.0f} ms"
          + (f", mean {1000 * statistics.mean(out):.0f} ms" if out else ""), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.webload", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="http://127.0.0.1:8080")
    p.add_argument("--credentials", type=Path, default=Path("var/web/demo-credentials.txt"))
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--latency-tickets", type=int, default=0)
    args = p.parse_args(argv)
    creds = read_credentials(args.credentials)
    if "ops" not in creds:
        print(f"{args.credentials}: no ops user (run `make run` first)", file=sys.stderr)
        return 2
    asyncio.run(load(args.base.rstrip("/"), creds, args.streams, args.rate, args.seconds))
    if args.latency_tickets:
        feed_latency(args.base.rstrip("/"), creds, args.latency_tickets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
