"""`simulate(config) -> Simulation`: the pure generator (no Kafka, no files, no wall clock).

Deterministic: the same config (with the same `start`) gives byte-identical messages and the same truth.
Reports and feedback are planned up front (a few thousand a day); the sensor readings (up to millions) are
generated while they are iterated, merged in time order with the rest.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

import orjson

from pipeline.config import Topics
from pipeline.model.taxonomy import default_taxonomy
from pipeline.simulate import malformed
from pipeline.simulate.catalog import DESCRIPTIONS, FEEDBACK_NOTES, PATROL_NOTES, check_codes
from pipeline.simulate.config import SHANGHAI, SimConfig
from pipeline.simulate.model import Incident, Report
from pipeline.simulate.people import CallerBook
from pipeline.simulate.plan import Planner
from pipeline.simulate.sensorsim import SensorNetwork
from pipeline.simulate.spec import SILENT_AFTER, silent_after
from pipeline.simulate.truth import Truth, iso
from pipeline.simulate.world import World
from pipeline.stages.decode import Decoder, TimeWindow
from pipeline.stages.registry import load_types
from rules.durations import format_duration

LOGICAL = Topics()     # NDJSON files name topics without a prefix; producing adds the configured one


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message to produce: `topic` is a `pipeline.config.Topics` field name (raw_hotline, ...)."""

    topic: str
    key: bytes | None
    value: bytes
    at: datetime


class Simulation:
    """The generated messages (in time order, regenerated on each iteration) and the ground truth."""

    def __init__(self, config: SimConfig, network: SensorNetwork, events: list[tuple[datetime, int, SimMessage]],
                 truth: Truth) -> None:
        self.config = config
        self.network = network
        self._events = events
        self.truth = truth

    def __len__(self) -> int:
        return len(self._events) + self.network.reading_count()

    @cached_property
    def count(self) -> int:
        return len(self)

    def messages(self) -> Iterator[SimMessage]:
        """Every message in event-time order (ties: reports and feedback before readings)."""
        events = self._events
        k, n = 0, len(events)
        for at, key, value in self.network.readings():
            while k < n and events[k][0] <= at:
                yield events[k][2]
                k += 1
            yield SimMessage("raw_iot", key, value, at)
        for _, _, m in events[k:]:
            yield m

    @property
    def silent(self) -> timedelta | None:
        """The `silent` every registered sensor needs in the registry when its readings are too sparse for the
        types' default (docs/cases.md §6.3; the bench's month: a reading a day), else None."""
        silent = silent_after(self.network.interval)
        return silent if silent > SILENT_AFTER else None

    def registry_csv(self) -> str:
        return self.network.registry_csv(self.silent)

    def write_registry(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.registry_csv(), encoding="utf-8")

    def patrols_yaml(self, world: World) -> str:
        """The patrol teams' assignment (责任网格, pipeline/reports/patrols.py): each of the simulated teams
        walks its whole sub-district and reports the categories of the patrols' mix."""
        from pipeline.reports.patrols import patrols_yaml
        from pipeline.simulate.catalog import PATROL_MIX

        subs = sorted({sid for code in self.config.districts for sid in world.districts[code].by_subdistrict})
        teams = [(f"patrol-{sub}-{n}", sub) for sub in subs
                 for n in range(1, self.config.patrol_teams_per_subdistrict + 1)]
        return patrols_yaml(teams, sorted(PATROL_MIX))

    def truth_json(self) -> bytes:
        return orjson.dumps(self.truth.to_json(), option=orjson.OPT_INDENT_2)


def plan(config: SimConfig, world: World) -> tuple[Planner, SensorNetwork, random.Random, CallerBook]:
    """The planned period (incidents, hot spots, broken sensors, overrides), before any message is made; the
    random generator and the callers go on to make the malformed messages."""
    cfg = config.checked()
    taxonomy = default_taxonomy()
    check_codes(taxonomy)
    rng = random.Random(cfg.seed)
    interval_s = int(cfg.reading_interval_min * 60)
    ticks = int((cfg.end - cfg.begin).total_seconds() // interval_s)
    network = SensorNetwork.build([world.districts[d] for d in cfg.districts], cfg.sensors,
                                  cfg.unregistered_sensors, load_types(taxonomy=taxonomy), cfg.begin, interval_s,
                                  ticks, cfg.seed, rng, positioned=cfg.positioned_unregistered)
    # decode as the worker does, without its wall-clock check (a realtime run plans times still to come)
    decoder = Decoder(taxonomy, TimeWindow(), now=lambda: datetime(9999, 1, 1, tzinfo=SHANGHAI))
    callers = CallerBook(rng, _forbidden_text(world))
    planner = Planner(cfg, world, network, rng, decoder, callers)
    planner.plan()
    return planner, network, rng, callers


def simulate(config: SimConfig, world: World | None = None) -> Simulation:
    """Generate the configured period (see SimConfig); `world` may be passed in to reuse a loaded grid."""
    cfg = config.checked()
    world = world or World()
    planner, network, rng, callers = plan(cfg, world)
    interval_s = network.interval_s

    events: list[tuple[datetime, int, SimMessage]] = []

    def add(topic: str, key: str, value: bytes, at: datetime) -> None:
        events.append((at, len(events), SimMessage(topic, key.encode(), value, at)))

    for inc in planner.incidents:
        for r in inc.reports:
            if r.message is not None:
                add("raw_hotline" if r.source == "hotline" else "raw_patrol", r.key, orjson.dumps(r.message), r.at)
        for n, a in enumerate(inc.actions, start=1):
            if a.at < cfg.end:
                update = {"case_id": inc.case_id, "action": a.action, "team": a.team, "actor": a.actor,
                          "at": a.at.astimezone(SHANGHAI).isoformat(timespec="seconds"), "note": a.note,
                          "update_id": f"{inc.case_id}/{n}"}
                if a.until is not None:
                    update["until"] = a.until.astimezone(SHANGHAI).isoformat(timespec="seconds")
                if a.action == "resolve":      # every simulated team photographs its fix (the rules' after_photo)
                    update["photo_url"] = (f"https://oss.example.cn/after/{a.at.astimezone(SHANGHAI):%Y/%m/%d}/"
                                           f"{inc.case_id}-{n}.jpg")
                add("case_updates", inc.case_id, orjson.dumps(update), a.at)
    for r in planner.unlocated:
        assert r.message is not None
        add("raw_hotline", r.key, orjson.dumps(r.message), r.at)

    good = Counter(m.topic for _, _, m in events)
    good["raw_iot"] = network.reading_count()
    used: dict[tuple[str, str], None] = {}
    for r in [r for i in planner.incidents for r in i.reports] + planner.unlocated:
        if r.caller is not None:
            used[(r.caller.name, r.caller.phone)] = None
    bad, kinds = _add_malformed(cfg, rng, planner, network, good, add, callers, used)
    events.sort(key=lambda e: (e[0], e[1]))

    clock_end = max([r.at for i in planner.incidents for r in i.reports]
                    + [a.at for i in planner.incidents for a in i.actions if a.at < cfg.end] + [cfg.begin])
    unregistered = [s for s in network.sensors if not s.registered]
    sim_silent = silent_after(network.interval)
    sensors_info = {
        "registered": sum(1 for s in network.sensors if s.registered),
        "unregistered": [s.sensor_id for s in unregistered],
        "positioned": [s.sensor_id for s in unregistered if s.positioned],
        "flapping": [network.sensors[i].sensor_id for i, o in network.overrides.items() if o.why == "flapping"],
        "broken": {b.sensor_id: b.mode for b in planner.broken},
        "faults": [{"sensor_id": b.sensor_id, "sensor_type": b.sensor_type, "mode": b.mode,
                    "since": iso(b.since), "case_id": b.case_id or None,
                    "fault": None if b.fault is None else {"kind": b.fault.kind, "at": iso(b.fault.at),
                                                           "certain": b.fault.certain}}
                   for b in planner.broken],
        "alarms": [{"sensor_id": i.sensor_id, "at": iso(i.first.at), "case_id": i.case_id, "kind": i.kind}
                   for i in planner.incidents if i.first.source == "iot"],
        "interval_s": interval_s,
        "silent": format_duration(sim_silent),
    }
    truth = Truth(
        start=cfg.begin, end=cfg.end, seed=cfg.seed, districts=cfg.districts, grid_version=world.grid_version,
        ruleset_version=world.rules.version, incidents=planner.incidents, broken=planner.broken,
        hotspots=planner.hotspots, unlocated=planner.unlocated, callers=list(used),
        messages={getattr(LOGICAL, t): n + bad.get(t, 0) for t, n in sorted(good.items())},
        malformed={getattr(LOGICAL, t): n for t, n in sorted(bad.items())}, malformed_kinds=dict(sorted(kinds.items())),
        readings=good["raw_iot"], unknown_sensor_readings=sum(network.readings_of(s) for s in unregistered),
        sensors=sensors_info, dropped=planner.dropped, clock_end=clock_end,
    )
    return Simulation(cfg, network, events, truth)


def _add_malformed(cfg: SimConfig, rng: random.Random, planner: Planner, network: SensorNetwork,
                   good: Counter[str], add: object, callers: CallerBook, used: dict[tuple[str, str], None],
                   ) -> tuple[dict[str, int], Counter[str]]:
    """Add `malformed_share` of broken messages to each input topic (so the share of the total is that)."""
    assert callable(add)
    share = cfg.malformed_share
    bad: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    span = (cfg.end - cfg.begin).total_seconds()
    # a broken sensor's episode must not depend on whether a broken message counts as a reading
    broken = {b.sensor_id for b in planner.broken}
    registered = [s for s in network.sensors if s.registered and s.sensor_id not in broken]
    type_names = sorted({s.sensor_type for s in network.sensors})
    case_ids = [i.case_id for i in planner.incidents] or ["C310109009001-000000000000"]
    for topic in ("raw_hotline", "raw_patrol", "raw_iot", "case_updates"):
        n = round(share * good.get(topic, 0) / (1 - share)) if share else 0
        if topic == "raw_iot" and not registered:
            n = 0
        bad[topic] = n
        for k in range(n):
            at = cfg.begin + timedelta(seconds=int(rng.random() * span))
            if topic == "raw_hotline":
                c = callers.caller()
                key, raw, kind = malformed.hotline(at, k, rng, {"name": c.name, "phone": c.phone})
                if b'"caller"' in raw:
                    used[(c.name, c.phone)] = None
            elif topic == "raw_patrol":
                key, raw, kind = malformed.patrol(at, k, rng)
            elif topic == "raw_iot":
                s = rng.choice(registered)
                other = rng.choice([t for t in type_names if t != s.sensor_type] or ["unknown_type"])
                key, raw, kind = malformed.reading(at, rng, s.sensor_id, s.sensor_type, other)
            else:
                key, raw, kind = malformed.update(at, rng, rng.choice(case_ids))
            kinds[f"{topic}:{kind}"] += 1
            add(topic, key, raw, at)
    return bad, kinds


def _forbidden_text(world: World) -> str:
    """All other text the simulator writes: a caller's name must not occur in it (privacy tests grep names)."""
    parts = [r.name for r in world.gazetteer.roads] + [p.name for p in world.gazetteer.places]
    parts += [d.name for d in world.districts.values()]
    parts += [n for d in world.districts.values() for n in d.subdistricts.values()]
    parts += [t for ts in DESCRIPTIONS.values() for t in ts] + list(PATROL_NOTES)
    parts += [t for ts in FEEDBACK_NOTES.values() for t in ts]
    parts += [c.name for c in default_taxonomy().categories.values()]
    return "\n".join(parts)


def incidents_by_case(sim: Simulation) -> dict[str, Incident]:
    return {i.case_id: i for i in sim.truth.incidents}


def unlocated_reports(sim: Simulation) -> list[Report]:
    return list(sim.truth.unlocated)
