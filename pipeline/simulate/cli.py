"""`cityops simulate` and `cityops replay`: generate a district's day(s) or replay a recording.

    cityops simulate --days 1 --district hongkou --speed x60               # to Kafka, 60x faster than life
    cityops simulate --out var/sim --truth var/sim/truth.json               # NDJSON files, no Kafka
    cityops replay var/sim/messages.ndjson --speed max
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.config import Settings
from pipeline.simulate.config import DISTRICTS, ConfigError, SimConfig, default_start, parse_start
from pipeline.simulate.produce import (
    Progress,
    RecordingError,
    count_lines,
    produce_messages,
    produce_simulation,
    read_ndjson,
    speed_factor,
    write_ndjson,
)


def config_from_args(args: argparse.Namespace, now: datetime | None = None) -> SimConfig:
    """A checked SimConfig from the command line (ConfigError with the option's name when bad)."""
    now = now or datetime.now(UTC)
    districts = tuple(DISTRICTS.values()) if args.district == "both" else (DISTRICTS[args.district],)
    factor = speed_factor(args.speed) if args.out is None else None
    start = parse_start(args.start) if args.start else None
    if start is None:
        # a live run starts now; a fast one covers the last whole day(s), so every time is in the past
        start = now.replace(second=0, microsecond=0) if factor == 1.0 else default_start(args.days, now)
    cfg = SimConfig(days=args.days, start=start, districts=districts, sensors=args.sensors,
                    reading_interval_min=args.reading_interval, seed=args.seed,
                    malformed_share=args.malformed_share).checked()
    if args.out is None and factor != 1.0 and cfg.end > now + timedelta(hours=1):
        raise ConfigError(f"--start: the period ends {cfg.end.isoformat()}, in the future; at speed {args.speed} "
                          "the worker would refuse those times (use --speed realtime or an earlier --start)")
    return cfg


def _simulate(args: argparse.Namespace) -> int:
    from pipeline.simulate.generate import simulate

    try:
        cfg = config_from_args(args)
    except (ConfigError, ValueError) as err:
        print(f"cityops simulate: {err}", file=sys.stderr)
        return 2
    print(f"simulating {cfg.days:g} day(s) of {', '.join(cfg.districts)} from {cfg.begin.isoformat()} "
          f"(seed {cfg.seed})...", file=sys.stderr)
    from pipeline.simulate.world import World

    world = World()
    sim = simulate(cfg, world)
    out = Path(args.out) if args.out else None
    registry = Path(args.registry) if args.registry else (out / "sensors.csv" if out else None)
    if registry is None:
        registry = Settings.from_env().var_dir / "sim" / "sensors.csv"
    sim.write_registry(registry)
    # the patrol teams' assignment (责任网格), for `cityops report evaluation --of position --patrols FILE`
    (registry.parent / "patrols.yaml").write_text(sim.patrols_yaml(world), encoding="utf-8")
    truth_path = Path(args.truth) if args.truth else (out / "truth.json" if out else None)
    if truth_path is not None:
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_path.write_bytes(sim.truth_json())
    progress = Progress(len(sim), "simulate")
    if out is not None:
        n = write_ndjson(sim.messages(), out / "messages.ndjson", progress)
        where = f"{n:,} messages written to {out / 'messages.ndjson'}"
    else:
        settings = Settings.from_env()
        try:
            report = produce_simulation(settings, sim, args.speed, progress)
        except RuntimeError as err:
            print(f"cityops simulate: {err}", file=sys.stderr)
            return 1
        where = f"{report.total:,} messages produced to {settings.kafka_bootstrap} in {report.seconds:.1f} s"
    _summary(sim, where, registry, truth_path)
    return 0


def _summary(sim: object, where: str, registry: Path, truth_path: Path | None) -> None:
    from pipeline.simulate.generate import Simulation

    assert isinstance(sim, Simulation)
    c = sim.truth.counts()
    lines = [
        where,
        f"  cases: {c['cases']:,} ({c['problems']:,} problems, {c['device_faults']} device faults"
        + (f", {c['device_faults_uncertain']} more may be raised" if c["device_faults_uncertain"] else "") + ")",
        f"  problems discovered by {c['discovered_by']}   proactive share {c['proactive_share']:.1%}   "
        f"multi-source {c['multi_source']}   across grids {c['multi_grid']}",
        f"  hot spots: {sim.truth.hotspot_cases()}; recurrent cases {c['recurrent']:,}",
        f"  closed {c['closed']:,} ({c['closed_on_time']:,} on time, {c['verified_by_patrol']} verified by a patrol), "
        f"overdue {c['overdue']:,} ({c['open_overdue']} still open), reworked {c['reworked']}, rejected "
        f"{c['rejected']}, re-routed {c['rerouted']}, feedback messages {c['feedback']:,}",
        f"  readings {c['readings']:,}; malformed {sum(c['malformed'].values()):,}; "
        f"unlocatable tickets {c['unlocated_tickets']}; unregistered-sensor readings {c['unknown_sensor_readings']}",
        f"  sensor registry: {registry} (point the worker at it: CITYOPS_SENSORS={registry})",
    ]
    if truth_path is not None:
        lines.append(f"  truth: {truth_path}")
    print("\n".join(lines), file=sys.stderr)


def _replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        speed_factor(args.speed)
        total = count_lines(path)
        # read once up front, so a bad line stops the replay before anything was produced
        messages = list(read_ndjson(path))
    except (OSError, ValueError) as err:
        print(f"cityops replay: {err}", file=sys.stderr)
        return 2
    except RecordingError as err:  # pragma: no cover - RecordingError is a ValueError, kept for clarity
        print(f"cityops replay: {err}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        report = produce_messages(settings, messages, total, args.speed, Progress(total, "replay"))
    except RuntimeError as err:
        print(f"cityops replay: {err}", file=sys.stderr)
        return 1
    print(f"replayed {report.total:,} messages from {path} in {report.seconds:.1f} s", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="generate a district's day(s) of events, to Kafka or NDJSON files")
    p.add_argument("--days", type=float, default=1.0, help="simulated days (default 1)")
    p.add_argument("--start", help="start date (YYYY-MM-DD, Shanghai) or ISO time; default: the last whole "
                                   "day(s), or now with --speed realtime")
    p.add_argument("--district", choices=["hongkou", "xuhui", "both"], default="hongkou")
    p.add_argument("--sensors", type=int, default=3000, help="registered sensors per district (up to 61000)")
    p.add_argument("--reading-interval", type=float, default=15.0, help="minutes between a sensor's readings")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--malformed-share", type=float, default=0.01, help="share of malformed messages per topic")
    p.add_argument("--speed", default="max", help="realtime, x60 (or any xN) or max (default)")
    p.add_argument("--out", help="write DIR/messages.ndjson (+ sensors.csv, truth.json) instead of producing")
    p.add_argument("--registry", help="where to write the sensor registry CSV (default: DIR/sensors.csv "
                                      "or $CITYOPS_VAR/sim/sensors.csv)")
    p.add_argument("--truth", help="write the ground truth JSON here")
    p.set_defaults(func=_simulate)
    r = sub.add_parser("replay", help="produce a recorded NDJSON file (from `cityops simulate --out`)")
    r.add_argument("file")
    r.add_argument("--speed", default="max", help="realtime, x60 (or any xN) or max (default)")
    r.set_defaults(func=_replay)
