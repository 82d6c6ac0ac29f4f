"""`make bench-cluster` (`python -m pipeline.bench.cluster`): the throughput phase of `make bench` on the single-node
stack and on the local cluster profile in one invocation, so the cost of replication (acks from three brokers,
`min.insync.replicas=2`, synchronous Distributed inserts, `insert_quorum=2`) is a ratio of figures of one run.

    python -m pipeline.bench.cluster [--events 60000] [--workers 1,2,4] [--quorum 2] [--timeout 300]

One simulated day (pipeline.bench.harness.day_config) is produced to fresh topics of each run; the workers
(`cityops worker`, one process each, one consumer group) go through it; the run is timed from their first output to
the last row stored and the last message produced (pipeline.bench.watch), and their CPU time is read from /proc.
Printed per run: events/s, worker CPU seconds and CPU milliseconds per message, what was stored; written to
var/bench/cluster-<stamp>.json. The cluster profile must be up (`make cluster-up`); the single-node stack too
(`make bench-cluster` starts it). On a 2-core machine 2 and 4 workers share the cores with 3 brokers, ZooKeeper and
4 ClickHouse servers: the figures show the shape (what replication costs per message, whether more workers still
help), not a city's capacity.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.bench.e2e import delete_run_topics, parse_args, run_throughput
from pipeline.bench.harness import build_input, day_config
from pipeline.config import ROOT, Settings, environ


def cluster_settings(quorum: int) -> Settings:
    """The settings `deploy/local/cluster.sh env` points cityops at (brokers, a ClickHouse node, the cluster)."""
    out = subprocess.run(["bash", str(ROOT / "deploy" / "local" / "cluster.sh"), "env"], capture_output=True,
                         text=True, check=True).stdout
    exports = dict(w.split("=", 1) for w in out.split() if "=" in w)
    return Settings.from_env({**environ(), **exports, "CITYOPS_INSERT_QUORUM": str(quorum)})


def summary(label: str, run: dict[str, Any]) -> dict[str, Any]:
    cpu = sum(c for c in run["worker_cpu_s"] if c == c)    # NaN (a process gone) left out
    return {"label": label, "workers": run["workers"], "events_per_s": run["events_per_s"],
            "cpu_s": cpu, "cpu_ms_per_message": 1000 * cpu / max(1, run["processed"]),
            "finished": run["finished"], "stored": run["stored"], "seconds": run["seconds"]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--workers", default="1,2,4", help="worker counts of the cluster runs")
    p.add_argument("--quorum", type=int, default=2, help="CITYOPS_INSERT_QUORUM of the cluster runs (0: off)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    cfg = parse_args(["--events", str(args.events), "--timeout", str(args.timeout), "--seed", str(args.seed)])
    from pipeline.simulate.world import World

    single, cluster = Settings.from_env(), cluster_settings(args.quorum)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    tag = "bcl" + stamp[2:].replace("T", "").lower()
    inp = build_input(day_config(cfg.events, cfg.seed, cfg.day_events), World(), cfg.out_dir, tag)
    print(f"bench-cluster {tag}: {len(inp.messages):,} messages; cluster runs with insert_quorum={args.quorum}")
    rows = []
    try:
        print("  single node, 1 worker...")
        rows.append(summary("single node", run_throughput(single, inp, 1, tag + "s1", cfg)))
        for n in (int(w) for w in args.workers.split(",")):
            print(f"  cluster, {n} worker(s)...")
            rows.append(summary("cluster", run_throughput(cluster, inp, n, tag + f"c{n}", replace(cfg))))
    finally:
        delete_run_topics(single, tag + "s", print)
        delete_run_topics(cluster, tag + "c", print)
    print(f"\n{'run':<12} {'workers':>7} {'events/s':>9} {'CPU s':>7} {'CPU ms/msg':>10} {'done':>5}  stored")
    for r in rows:
        print(f"{r['label']:<12} {r['workers']:>7} {r['events_per_s']:>9,.0f} {r['cpu_s']:>7.1f} "
              f"{r['cpu_ms_per_message']:>10.3f} {str(r['finished']):>5}  {r['stored']}")
    one = next((r for r in rows[1:] if r["workers"] == 1), None)
    if one is not None:
        print(f"cluster / single node, 1 worker: {one['events_per_s'] / rows[0]['events_per_s']:.2f} x events/s, "
              f"{one['cpu_ms_per_message'] / rows[0]['cpu_ms_per_message']:.2f} x CPU per message")
    out: Path = cfg.out_dir / f"cluster-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({"stamp": stamp, "messages": len(inp.messages), "quorum": args.quorum,
                                  "runs": rows}, option=orjson.OPT_INDENT_2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
