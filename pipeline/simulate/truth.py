"""The ground truth of a simulation, as JSON (`cityops-sim-truth/2`): what really happened, by docs/cases.md, to
compare with what the pipeline makes of it.

Built only from the planner's records (never from the pipeline), it says per **case** (problem or device fault)
where and what it was, which report opened it and who found it, every dispatch round (team, kind, priority,
deadlines, how it ended), how far it got by the end of the simulated period, whether it was closed on time
(§8), and whether it is a recurrence (§5, counted from the cases themselves); per hot spot its cases; per broken
sensor the fault the worker must raise; and the counts of messages, malformed input and unlocatable tickets.

What the truth assumes of the worker: reports and updates are processed in time order, up to a skew far below
the 15-minute margins the plan keeps; a book's clock is at the time of the report it applies (so a round is
dispatched at its report's time); a silence is judged by the ingest partition's newest reading (a fault whose
time falls in the period's last reading interval is `certain: false`). The README's simulator section has the
format.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.simulate.lifecycle import new_round
from pipeline.simulate.model import Broken, Hotspot, Incident, Report, Round
from pipeline.simulate.spec import FAULT_ROUTE, RECURRENCE_DAYS, VERIFY_LIMIT, grid_of

FORMAT = "cityops-sim-truth/2"


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _before(at: datetime | None, end: datetime) -> datetime | None:
    return at if at is not None and at < end else None


@dataclass(frozen=True, slots=True)
class Recurrence:
    """§5: whether a problem case is recurrent, and the case it is linked to as a return."""

    recurrent: bool
    recurrence_of: str | None
    previous_closed_at: datetime | None


def recurrences(incidents: list[Incident], end: datetime) -> dict[str, Recurrence]:
    """Per case id: recurrent when an earlier problem case of the same category in the same cell was closed
    before it was created and at most `RECURRENCE_DAYS` before; linked (`recurrence_of`) to the most recently
    closed such case, or, for a case a sensor opened, to that sensor's most recently closed case."""
    closed: dict[tuple[str, str], list[Incident]] = defaultdict(list)
    by_sensor: dict[str, list[Incident]] = defaultdict(list)
    for i in incidents:
        if _before(i.closed_at, end) is not None:
            closed[(i.spot.cell, i.category)].append(i)
            if i.sensor_id is not None:
                by_sensor[i.sensor_id].append(i)
    horizon = timedelta(days=RECURRENCE_DAYS)
    out: dict[str, Recurrence] = {}
    for i in incidents:
        created = i.first.at

        def earlier(cases: list[Incident], created: datetime = created) -> list[Incident]:
            return [c for c in cases if c.closed_at is not None and created - horizon <= c.closed_at < created]

        same_place = earlier(closed[(i.spot.cell, i.category)])
        linkable = earlier(by_sensor[i.sensor_id]) if i.first.source == "iot" and i.sensor_id else same_place
        last = max(linkable, key=lambda c: (c.closed_at, c.case_id), default=None)
        out[i.case_id] = Recurrence(bool(same_place), last.case_id if last else None,
                                    last.closed_at if last else None)
    return out


def round_json(n: int, r: Round, end: datetime) -> dict[str, Any]:
    """A round as of the period's end: `outcome` open | resolved | verified | reworked | rejected | superseded."""
    ended = _before(r.ended_at, end)
    resolved = _before(r.resolved_at, end)
    outcome = r.ending if ended is not None else "resolved" if resolved is not None else "open"
    return {"round": n, "team": r.team, "kind": r.kind, "why": r.why, "rule_id": r.route.rule_id,
            "priority": r.priority, "dispatched_at": iso(r.dispatched_at), "due_at": iso(r.due_at),
            "accept_due_at": iso(r.accept_due_at), "accepted_at": iso(_before(r.accepted_at, end)),
            "resolved_at": iso(resolved), "ended_at": iso(ended), "outcome": outcome,
            "extensions": r.extensions if r.extended_at is not None and r.extended_at < end else 0,
            "verified_by": r.verified_by if ended is not None and r.ending == "verified" else ""}


def _state(rounds: list[Round], end: datetime, clock_end: datetime) -> dict[str, Any]:
    """The case's state at the period's end, from its rounds dispatched before it (§3, §8)."""
    cur = rounds[-1]
    closed = _before(cur.ended_at, end) if cur.ending == "verified" else None
    resolved = _before(cur.resolved_at, end)
    status = ("closed" if closed is not None else "resolved" if resolved is not None
              else "accepted" if _before(cur.accepted_at, end) is not None else "dispatched")
    case_due = min([rounds[0].due_at] + [r.due_at for r in rounds if r.why == "merge"])
    verify_due = None if resolved is None else resolved + VERIFY_LIMIT[cur.priority]
    on_time = None
    if closed is not None:
        assert resolved is not None and verify_due is not None
        on_time = resolved <= case_due and closed <= verify_due
    overdue = False
    for r in rounds:
        if _before(r.ended_at, end) is not None and r.ending in ("rejected", "superseded"):
            continue                       # not due for its team (§8)
        done = _before(r.resolved_at, end) or clock_end
        overdue |= r.due_at < done
    return {"team": cur.team, "priority": cur.priority, "status": status, "due_at": iso(cur.due_at),
            "case_due_at": iso(case_due), "resolved_at": iso(resolved), "verify_due_at": iso(verify_due),
            "closed_at": iso(closed), "closed_on_time": on_time,
            "verified_by": cur.verified_by if closed is not None else "",
            "reworked": sum(1 for r in rounds if r.kind == "rework"),
            "rejected": sum(1 for r in rounds if r.ending == "rejected" and _before(r.ended_at, end) is not None),
            "rerouted": sum(1 for r in rounds if r.why == "merge"),
            "overdue": overdue,
            "open_overdue": status in ("dispatched", "accepted") and cur.due_at < clock_end}


def _report_json(r: Report) -> dict[str, Any]:
    return {"source": r.source, "event_id": r.event_id, "at": iso(r.at), "cell": r.cell or None}


def problem_json(i: Incident, rec: Recurrence, end: datetime, clock_end: datetime) -> dict[str, Any]:
    rounds = [r for r in i.rounds if r.dispatched_at < end]
    return {
        "case_id": i.case_id, "kind": "problem", "certain": True, "incident_id": i.incident_id, "plan": i.kind,
        "district": i.district, "category": i.category, "cell": i.spot.cell, "grid": i.spot.grid,
        "subdistrict": i.spot.subdistrict, "grid_kind": i.spot.grid_kind, "lon": i.spot.lon, "lat": i.spot.lat,
        "discovered_by": i.discovered_by, "sensor_id": i.sensor_id, "scope": i.scope,
        "first_event_id": i.first.event_id, "first_at": iso(i.first.at),
        "reports": [_report_json(r) for r in i.reports], "sources": sorted({r.source for r in i.reports}),
        "rounds": [round_json(n, r, end) for n, r in enumerate(rounds, start=1)],
        **_state(rounds, end, clock_end),
        "recurrent": rec.recurrent, "recurrence_of": rec.recurrence_of,
        "previous_closed_at": iso(rec.previous_closed_at),
        "hotspot": i.hotspot, "near_case": i.near_case,
        "feedback": [{"action": a.action, "team": a.team, "at": iso(a.at), "round": a.round + 1}
                     for a in i.actions if a.at < end],
    }


def fault_json(b: Broken, end: datetime, clock_end: datetime) -> dict[str, Any]:
    """A device-fault case (§6.3): one report, routed by the device-fault rule, no feedback in the period."""
    assert b.fault is not None
    at = b.fault.at
    r = new_round(FAULT_ROUTE, "dispatch", "first", at)
    return {
        "case_id": b.case_id, "kind": "device_fault", "certain": b.fault.certain, "incident_id": None,
        "plan": f"broken:{b.mode}", "district": b.spot.cell[:6], "category": b.category, "cell": b.spot.cell,
        "grid": grid_of(b.spot.cell), "subdistrict": b.spot.subdistrict, "grid_kind": b.spot.grid_kind,
        "lon": b.spot.lon, "lat": b.spot.lat, "discovered_by": "sensor", "sensor_id": b.sensor_id,
        "scope": None, "fault": {"kind": b.fault.kind, "at": iso(at), "certain": b.fault.certain},
        "broken_since": iso(b.since), "first_event_id": b.event_id, "first_at": iso(at),
        "reports": [{"source": "iot", "event_id": b.event_id, "at": iso(at), "cell": b.spot.cell}],
        "sources": ["iot"], "rounds": [round_json(1, r, end)], **_state([r], end, clock_end),
        "recurrent": False, "recurrence_of": None, "previous_closed_at": None, "hotspot": None,
        "near_case": None, "feedback": [],
    }


@dataclass
class Truth:
    """Everything a test needs to check the pipeline against (see `to_json` for the file)."""

    start: datetime
    end: datetime
    seed: int
    districts: tuple[str, ...]
    grid_version: str
    ruleset_version: str
    incidents: list[Incident]          # the problems: one case each
    broken: list[Broken]               # the broken sensors: a device-fault case each, when the period lets them
    hotspots: list[Hotspot]
    unlocated: list[Report]
    callers: list[tuple[str, str]]
    messages: dict[str, int]
    malformed: dict[str, int]
    malformed_kinds: dict[str, int]
    readings: int
    unknown_sensor_readings: int
    sensors: dict[str, Any]
    dropped: int
    clock_end: datetime
    cases: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rec = recurrences(self.incidents, self.end)
        self.cases = [problem_json(i, rec[i.case_id], self.end, self.clock_end) for i in self.incidents]
        self.cases += [fault_json(b, self.end, self.clock_end) for b in self.broken if b.fault is not None]

    def case(self, case_id: str) -> dict[str, Any]:
        return next(c for c in self.cases if c["case_id"] == case_id)

    def problems(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["kind"] == "problem"]

    def hotspot_cases(self) -> dict[str, int]:
        return {h.hotspot_id: len(h.incidents) for h in self.hotspots}

    def discovered(self) -> dict[str, int]:
        return dict(Counter(i.discovered_by for i in self.incidents))

    def counts(self) -> dict[str, Any]:
        problems = self.problems()
        faults = [c for c in self.cases if c["kind"] == "device_fault"]
        return {
            "messages": self.messages, "malformed": self.malformed, "malformed_kinds": self.malformed_kinds,
            "readings": self.readings, "unknown_sensor_readings": self.unknown_sensor_readings,
            "incidents": len(problems), "problems": len(problems),
            "device_faults": sum(1 for c in faults if c["certain"]),
            "device_faults_uncertain": sum(1 for c in faults if not c["certain"]),
            "cases": len(problems) + sum(1 for c in faults if c["certain"]),
            "discovered_by": self.discovered(),
            "proactive_share": round(sum(1 for i in self.incidents if i.discovered_by != "citizen")
                                     / max(1, len(self.incidents)), 4),
            "multi_source": sum(1 for c in problems if len(c["sources"]) > 1),
            "multi_grid": sum(1 for c in problems if len({r["cell"][:12] for r in c["reports"] if r["cell"]}) > 1),
            "unlocated_tickets": len(self.unlocated),
            "closed": sum(1 for c in problems if c["status"] == "closed"),
            "closed_on_time": sum(1 for c in problems if c["closed_on_time"]),
            "verified_by_patrol": sum(1 for c in problems if c["verified_by"] == "patrol"),
            "recurrent": sum(1 for c in problems if c["recurrent"]),
            "returns": sum(1 for c in problems if c["recurrence_of"]),
            "reworked": sum(1 for c in problems if c["reworked"]),
            "reopened": sum(c["reworked"] for c in problems),
            "rejected": sum(c["rejected"] for c in problems),
            "rerouted": sum(c["rerouted"] for c in problems),
            "person_near_open": sum(1 for c in problems if c["near_case"]),
            "overdue": sum(1 for c in problems if c["overdue"]),
            "open_overdue": sum(1 for c in problems if c["open_overdue"]),
            "feedback": sum(len(c["feedback"]) for c in problems),
            "dropped_for_density": self.dropped,
        }

    def to_json(self) -> dict[str, Any]:
        by_id = {i.incident_id: i for i in self.incidents}
        recurrent = {c["case_id"] for c in self.cases if c["recurrent"]}
        return {
            "format": FORMAT,
            "seed": self.seed, "start": iso(self.start), "end": iso(self.end), "districts": list(self.districts),
            "grid_version": self.grid_version, "ruleset_version": self.ruleset_version,
            "clock_end": iso(self.clock_end),
            "counts": self.counts(),
            "cases": self.cases,
            "hotspots": [{"hotspot_id": h.hotspot_id, "district": h.district, "cell": h.spot.cell,
                          "category": h.category, "cases": len(h.incidents),
                          "case_ids": [by_id[x].case_id for x in h.incidents],
                          "recurrent": sum(1 for x in h.incidents if by_id[x].case_id in recurrent)}
                         for h in self.hotspots],
            "unlocated": [{"ticket": r.key, "at": iso(r.at),
                           "address": (r.message or {}).get("address_string")} for r in self.unlocated],
            "callers": [{"name": n, "phone": p} for n, p in self.callers],
            "sensors": self.sensors,
        }
