"""The executor of the scenario catalogue: a scenario's steps through the real ingest stage (decoder, sensor
state, gazetteer, grid) and the real case books and rules, then what came out compared with what the file
expects. `check(run(scenario))` lists every difference; the report figures are checked separately
(tests/scenarios/test_case_scenarios.py), on the real ClickHouse server and on chdb.

The wiring is the worker's (pipeline.stages.ingest): one ingest partition for every source, each step's located output
applied by `CaseStage.apply` at once, the wall clock (wall scenarios) read from the last `{wall: T}` step.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from pipeline.model.cases import Case, CorrelationPolicy
from pipeline.model.records import SinkBatch
from pipeline.model.taxonomy import default_taxonomy
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import Decoder, TimeWindow
from pipeline.stages.ingest import Ingest, IngestResult
from pipeline.stages.lifecycle import Outcome
from pipeline.stages.registry import SensorRegistry, load_registry, load_types
from pipeline.stages.sensors import SensorState
from pipeline.wire import Message
from rules.engine import Ruleset, load_ruleset
from tests.scenarios.catalogue import (
    Checked,
    Patrol,
    Reading,
    Scenario,
    Ticket,
    Update,
    WallTick,
    local_time,
)

TOPICS = {"reading": "cityops.raw.iot", "ticket": "cityops.raw.hotline", "patrol": "cityops.raw.patrol",
          "update": "cityops.case-updates"}
MAX_AHEAD = timedelta(minutes=5)


@cache
def _grid() -> Any:
    from grid.index import GridIndex

    return GridIndex.load()


@cache
def _gazetteer() -> Any:
    from grid.gazetteer import Gazetteer

    return Gazetteer.load()


@cache
def _rules() -> Ruleset:
    return load_ruleset()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Run:
    """What a scenario produced, in the order it was produced."""

    scenario: Scenario
    books: dict[str, CaseBook] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    dead_letters: list[str] = field(default_factory=list)
    step_cases: dict[int, list[str]] = field(default_factory=dict)   # step -> ids of the cases its reports joined
    labels: dict[str, str] = field(default_factory=dict)             # expected label -> case id
    readings: int = 0

    def cases(self) -> dict[str, Case]:
        return {cid: c for book in self.books.values() for cid, c in book.cases.items()}

    def case_label(self, case_id: str) -> str:
        return next((label for label, cid in self.labels.items() if cid == case_id), case_id)

    def batch(self) -> SinkBatch:
        """Everything the scenario stored, as the sink would get it."""
        o = self.outcome
        return SinkBatch(cases=list(o.cases.values()), events=list(o.events), transitions=list(o.transitions),
                         rounds=list(o.rounds.values()))


def _registry(s: Scenario, tmp: Path) -> SensorRegistry:
    path = tmp / "registry.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["sensor_id", "sensor_type", "lon", "lat", "silent"])
        for sensor in s.sensors.values():
            out.writerow([sensor.sensor_id, sensor.sensor_type, sensor.place.lon, sensor.place.lat,
                          sensor.silent or ""])
    return load_registry(path, load_types())


def _message(s: Scenario, payload: Any, at: datetime, labels: dict[str, str], sub_of: Callable[[Any], str]) -> bytes:
    if isinstance(payload, Reading):
        msg: dict[str, Any] = {"sensor_id": payload.sensor_id, "sensor_type": payload.sensor_type,
                               "value": payload.value, "measured_at": _iso(at)}
        if payload.position_in_message and payload.place is not None:
            msg["lon"], msg["lat"] = payload.place.lon, payload.place.lat
    elif isinstance(payload, Ticket):
        msg = {"service_request_id": payload.ticket_id, "requested_datetime": _iso(at),
               "service_code": payload.category, "description": payload.description}
        if payload.place is not None:
            msg["lat"], msg["long"] = payload.place.lat, payload.place.lon
        if payload.address is not None:
            msg["address_string"] = payload.address
        for key, value in (("request_type", payload.request_type), ("channel", payload.channel)):
            if value is not None:
                msg[key] = value
        if payload.caller is not None:
            msg["caller"] = {k: v for k, v in (("name", payload.caller.name), ("phone", payload.caller.phone)) if v}
    elif isinstance(payload, Patrol):
        msg = {"report_id": payload.report_id, "observed_at": _iso(at),
               "team": payload.team or f"patrol-{sub_of(payload.place)}-1", "inspector": payload.inspector or "XC0001",
               "category": payload.category, "lat": payload.place.lat, "lon": payload.place.lon}
        if payload.note:
            msg["note"] = payload.note
        if payload.photo:
            msg["photo_url"] = payload.photo
    else:
        assert isinstance(payload, Update)
        if payload.case not in labels:
            raise AssertionError(f"{s.name}: update of case {payload.case} before any report of it was seen")
        msg = {"case_id": labels[payload.case], "action": payload.action, "team": payload.team,
               "actor": payload.actor or f"{payload.team}-01", "at": _iso(at)}
        if payload.note:
            msg["note"] = payload.note
        if payload.photo:
            msg["photo_url"] = payload.photo
    return orjson.dumps(msg)


def run(s: Scenario) -> Run:
    """Apply the scenario's steps, in order, through the worker's chain."""
    result = Run(s)
    wall = [s.steps[0].at]
    now = [s.steps[0].at]
    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(s, Path(tmp))
    decoder = Decoder(taxonomy=default_taxonomy(), window=TimeWindow(max_ahead=MAX_AHEAD), now=lambda: now[0])
    ingest = Ingest(decoder=decoder, grid=_grid(), gazetteer=_gazetteer(), sensors=registry)
    stage = CaseStage(_rules(), CorrelationPolicy(), clock=s.clock, wall_now=lambda: wall[0])
    states: dict[str, SensorState] = {}
    expected_steps = {c.step: label for label, c in s.expect.cases.items()}

    def subdistrict(place: Any) -> str:
        located = _grid().locate_batch([place.lon], [place.lat])
        return str(located.subdistrict[0] or "")

    for offset, step in enumerate(s.steps):
        kind = step.kind
        if isinstance(step.payload, WallTick):
            wall[0] = now[0] = step.at
            result.outcome.extend(stage.escalate(result.books.values()))
            continue
        if s.clock == "stream":
            now[0] = step.at          # a message arrives when it says it was made
        raw = _message(s, step.payload, step.at, result.labels, subdistrict)
        msg = Message(TOPICS[kind], 0, offset, raw, None)
        res: IngestResult
        if kind == "reading":
            res = ingest.readings([msg], states)
            result.readings += 1
        elif kind == "update":
            res = ingest.updates([msg])
        else:
            res = ingest.reports("hotline" if kind == "ticket" else "patrol", [msg])
        result.dead_letters += [d.reason for d in res.deadletters]
        out = stage.apply(res.located, result.books)
        result.outcome.extend(out)
        joined = list(dict.fromkeys(e.case_id for e in out.events))
        result.step_cases[step.index] = joined
        if step.index in expected_steps:
            result.labels[expected_steps[step.index]] = _pick(s, step.index, joined, result)
    return result


def _pick(s: Scenario, index: int, joined: list[str], result: Run) -> str:
    """The case of the report of step `index` (by the expected kind and sensor when a step raised several)."""
    cases = result.cases()
    labels = [label for label, c in s.expect.cases.items() if c.step == index]
    label = labels[0]
    want = s.expect.cases[label]
    fits = [cid for cid in joined
            if ("kind" not in want.checked or cases[cid].kind == want.kind)
            and ("sensor" not in want.checked or cases[cid].sensor_id == want.sensor)]
    return fits[0] if len(fits) == 1 else (joined[0] if joined else f"<no case from step {index}>")


# -- comparison -------------------------------------------------------------------------------------------

def _show(value: Any, s: Scenario) -> Any:
    return local_time(value, s.day) if isinstance(value, datetime) else value


def _diff(where: str, want: Checked, got: dict[str, Any], s: Scenario) -> list[str]:
    out = []
    for name, value in want.expected().items():
        actual = got.get(name, "<missing>")
        if actual != value:
            out.append(f"{where}.{name}: expected {_show(value, s)!r}, got {_show(actual, s)!r}")
    return out


def _case_fields(case: Case, r: Run) -> dict[str, Any]:
    return {"kind": case.kind, "category": case.category, "team": case.team, "status": case.status,
            "priority": case.priority, "discovered_by": case.discovered_by, "reports": case.reports,
            "cell": case.cell, "subdistrict": case.subdistrict, "sensor": case.sensor_id,
            "created_at": case.created_at, "due_at": case.due_at, "case_due_at": case.case_due_at,
            "resolved_at": case.resolved_at, "verify_due_at": case.verify_due_at, "closed_at": case.closed_at,
            "reopened": case.reopened, "rejected": case.rejected,
            "recurrence_of": None if case.recurrence_of is None else r.case_label(case.recurrence_of),
            "previous_closed_at": case.previous_closed_at,
            "before_photos": tuple(e.media_url for e in dict((e.event_id, e) for e in r.outcome.events
                                                              if e.case_id == case.case_id).values() if e.media_url),
            "after_photo": case.after_photo_url or None}


def check(r: Run) -> list[str]:
    """Every difference between what the scenario expects and what ran (empty: it passed)."""
    s, problems = r.scenario, []
    cases = r.cases()
    unlabelled = sorted(set(cases) - set(r.labels.values()))
    if unlabelled or len(cases) != len(s.expect.cases):
        problems.append(f"cases: expected {len(s.expect.cases)} ({', '.join(s.expect.cases)}), got {len(cases)}"
                        + (f"; not expected: {', '.join(unlabelled)}" if unlabelled else ""))
    for label, want in s.expect.cases.items():
        case = cases.get(r.labels.get(label, ""))
        if case is None:
            problems.append(f"case {label}: no case holds the report of step {want.step}")
            continue
        if list(r.labels.values()).count(case.case_id) > 1:
            problems.append(f"case {label}: the same case as {[k for k, v in r.labels.items() if v == case.case_id]}")
        problems += _diff(f"case {label}", want, _case_fields(case, r), s)
        for i, (rw, rg) in enumerate(zip(s.expect.rounds.get(label, ()), case.rounds, strict=False)):
            got_round = {f.name: getattr(rg, f.name) for f in dataclass_fields(rg)}
            problems += _diff(f"case {label} round {i + 1}", rw, got_round, s)
        if label in s.expect.rounds and len(s.expect.rounds[label]) != len(case.rounds):
            problems.append(f"case {label}: expected {len(s.expect.rounds[label])} rounds, got {len(case.rounds)}")
    got = r.outcome.assignments
    if len(got) != len(s.expect.assignments):
        problems.append(f"assignments: expected {len(s.expect.assignments)}, got {len(got)}: "
                        + "; ".join(f"{r.case_label(a.case_id)} {a.kind} {a.team} {_show(a.created_at, s)}"
                                    for a in got))
    for i, (want, a) in enumerate(zip(s.expect.assignments, got, strict=False)):
        fields = {"case": r.case_label(a.case_id), "kind": a.kind, "team": a.team, "priority": a.priority,
                  "created_at": a.created_at, "due_at": a.due_at, "rule": a.rule_id}
        problems += _diff(f"assignment {i + 1}", want, fields, s)
    refused = [f"refused: {reason}" for reason in r.outcome.refusals]     # as the dead letter says it
    for name, wanted, actual in (("refused", s.expect.refused, refused),
                                 ("dead_letters", s.expect.dead_letters, r.dead_letters)):
        if wanted is None:
            continue
        if len(wanted) != len(actual) or any(w not in a for w, a in zip(wanted, actual, strict=False)):
            problems.append(f"{name}: expected {list(wanted)}, got {actual}")
    return problems

