"""Cases and their lifecycle: correlate reports into cases, dispatch them, and apply what teams report back.

A `CaseBook` holds every case of one partition key (a management grid, i.e. the first 12 digits of the cell
code; see `partition_key`). It is plain data: the worker keeps one per key in a changelog-backed table and this module
never touches Kafka or ClickHouse. Each method returns an `Outcome` with what must leave the worker
(assignments, ClickHouse rows, refusals); the book itself is the new state.

The lifecycle (DOMAIN.md "The standard case flow"):

    new -> dispatched -> accepted -> resolved -> verified -> closed
              ^   |          |           |           |          |
              |   +- reject -+           +-- reopen -+----------+   (failed check, or a new report soon after)
              +---------------- reroute / reopen -------------------+

- `reject` (by the assigned team, before it resolves) sends the case back to dispatch: the rules route it again,
  and when they would pick the rejecting team again it goes to supervision to decide.
- `verify` (by supervision) of a resolved case verifies and closes it (two transitions, one update).
- `reopen` (by supervision, of a resolved/verified/closed case) and a new report of the same problem within the
  reopen window after closing dispatch it again; `reopened` counts these. A reopen is never a new case.
- Escalation: a case not resolved by `due_at` (by the partition's stream clock: the latest event time seen) is
  escalated once per dispatch: supervision is notified.
- Anything else (resolve a closed case, a team acting on another team's case) is refused with a reason.

Idempotence: every event id and update id that changed the book is remembered, so a replayed input changes
nothing and produces nothing; ids (case, assignment) derive from the inputs, so a replay after a crash that lost
the book's last write produces the same ids again.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pipeline.decode import CaseUpdate
from pipeline.model import DISCOVERED_BY, Event, Location, record
from pipeline.records import CaseRow, EventRow, TransitionRow
from rules.recurrence import RecurrenceHistory

OUTSIDE_KEY = "outside"
OPEN_STATES = frozenset({"dispatched", "accepted"})
HANDLED_STATES = frozenset({"resolved", "verified", "closed"})


class DispatchLike(Protocol):
    team: str
    priority: int
    sla: timedelta
    escalate_to: str | None
    notify: tuple[str, ...]
    tags: tuple[str, ...]
    rule_id: str
    reason: str
    ruleset_version: str


class Router(Protocol):
    """What the book needs from the rules engine (rules.engine.Ruleset satisfies it): the decision without a due
    time, which the book computes (`at + sla`); the engine shares one decision object per rule."""

    def decide(self, event: Event, recurrence: Any) -> DispatchLike: ...


@dataclass(frozen=True)
class CorrelationPolicy:
    """How near (metres) and how soon (hours) a report must be to join an open case, per category family.

    A family is a major class (`E04`, `P01`, ...). `reopen_days`: a report after closing within this many days
    reopens the case instead of opening a new one. Closed cases (with the ids of the reports and updates they
    absorbed) are kept `keep_days` after closing: for recurrence counts and to recognise replays.
    """

    default_radius_m: float = 100.0
    default_window_h: float = 24.0
    families: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "E04": (300.0, 6.0),     # emergencies: a burst pipe is reported from the whole block, within hours
        "P01": (50.0, 72.0),     # utility parts (manhole covers...): one object, reports over days
        "E05": (150.0, 4.0),     # street order (vendors) moves, and comes back the same evening
    })
    reopen_days: float = 7.0
    keep_days: float = 90.0
    park_hours: float = 24.0

    def for_category(self, category: str) -> tuple[float, timedelta]:
        radius, hours = self.families.get(category[:3], (self.default_radius_m, self.default_window_h))
        return radius, timedelta(hours=hours)


@record
class Assignment:
    """One message on `cityops.assignments` (CONTRACTS.md), keyed by team."""

    assignment_id: str
    case_id: str
    team: str
    priority: int
    due_at: datetime
    category: str
    cell: str
    subdistrict: str
    lat: float | None
    lon: float | None
    rule_id: str
    reason: str
    sources: tuple[str, ...]
    created_at: datetime
    kind: str = "dispatch"          # dispatch | reroute | reopen | escalation
    escalate_to: str | None = None
    notify: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ruleset_version: str = ""
    grid_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "assignment_id": self.assignment_id, "case_id": self.case_id, "team": self.team,
            "priority": self.priority, "due_at": _iso(self.due_at), "category": self.category,
            "cell": self.cell, "subdistrict": self.subdistrict, "lat": self.lat, "lon": self.lon,
            "rule_id": self.rule_id, "reason": self.reason, "sources": list(self.sources),
            "created_at": _iso(self.created_at), "kind": self.kind, "escalate_to": self.escalate_to,
            "notify": list(self.notify), "tags": list(self.tags), "ruleset_version": self.ruleset_version,
            "grid_version": self.grid_version,
        }


@dataclass
class Outcome:
    """What one call changed: messages to send and rows to store."""

    assignments: list[Assignment] = field(default_factory=list)
    cases: dict[str, CaseRow] = field(default_factory=dict)    # latest row per case
    states: dict[str, dict[str, Any]] = field(default_factory=dict)   # latest public state per case
    events: list[EventRow] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: Outcome) -> None:
        self.assignments += other.assignments
        self.cases.update(other.cases)
        self.states.update(other.states)
        self.events += other.events
        self.transitions += other.transitions
        self.refusals += other.refusals
        self.duplicates += other.duplicates


@dataclass
class Case:
    case_id: str
    category: str
    cell: str
    subdistrict: str
    grid_kind: str
    lon: float | None
    lat: float | None
    discovered_by: str
    created_at: datetime
    team: str = ""
    status: str = "new"
    priority: int = 3
    due_at: datetime | None = None
    closed_at: datetime | None = None
    resolved_at: datetime | None = None
    last_report_at: datetime | None = None
    reports: int = 0
    sources: list[str] = field(default_factory=list)
    reopened: int = 0
    rule_id: str = ""
    reason: str = ""
    escalate_to: str | None = None
    ruleset_version: str = ""
    grid_version: str = ""
    revision: int = 0
    dispatches: int = 0
    transitions: int = 0
    escalated: bool = False
    sensor_id: str | None = None
    first_event: dict[str, Any] = field(default_factory=dict)
    # where and from which sources the current dispatch was made: an escalation repeats it, so that its content
    # does not depend on when the overdue check ran (a replay after a crash re-sends it with the same content)
    dispatched_at_place: list[Any] = field(default_factory=list)      # [lat, lon, cell, subdistrict, sources]
    event_ids: list[str] = field(default_factory=list)      # reports absorbed (to recognise replays)
    update_ids: list[str] = field(default_factory=list)     # team updates applied

    def to_dict(self) -> dict[str, Any]:
        return _case_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        return _case_from_dict(d)

    def state(self) -> dict[str, Any]:
        """The public state of the case (the `cityops.case-state` topic; README "Output topics")."""
        return {
            "case_id": self.case_id, "category": self.category, "discovered_by": self.discovered_by,
            "cell": self.cell, "subdistrict": self.subdistrict, "grid_kind": self.grid_kind,
            "lon": self.lon, "lat": self.lat, "team": self.team, "status": self.status,
            "priority": self.priority, "created_at": _iso(self.created_at),
            "due_at": _iso(self.due_at) if self.due_at else None,
            "resolved_at": _iso(self.resolved_at) if self.resolved_at else None,
            "closed_at": _iso(self.closed_at) if self.closed_at else None, "reports": self.reports,
            "sources": list(self.sources), "reopened": self.reopened, "escalated": self.escalated,
            "rule_id": self.rule_id, "reason": self.reason, "ruleset_version": self.ruleset_version,
            "grid_version": self.grid_version, "revision": self.revision,
        }

    def row(self) -> CaseRow:
        return CaseRow(
            case_id=self.case_id, category=self.category, discovered_by=self.discovered_by, cell=self.cell,
            subdistrict=self.subdistrict, grid_kind=self.grid_kind, team=self.team, status=self.status,
            priority=self.priority, created_at=self.created_at, due_at=self.due_at, closed_at=self.closed_at,
            reports=self.reports, sources=tuple(self.sources), reopened=self.reopened, rule_id=self.rule_id,
            ruleset_version=self.ruleset_version, grid_version=self.grid_version, revision=self.revision,
        )


def partition_key(location: Location | None) -> str:
    """Key of the book an event belongs to: its management grid (cell code minus the 3-digit sequence)."""
    if location is None or not location.cell:
        return OUTSIDE_KEY
    return location.cell[:12]


def case_id_for(key: str, first_event_id: str) -> str:
    """The id of the case opened by `first_event_id` in the book `key` (stable across replays)."""
    return f"C{key}-{hashlib.sha1(first_event_id.encode()).hexdigest()[:12]}"


def case_partition_key(case_id: str) -> str:
    """The book key encoded in a case id (`C<key>-<hash>`), so case updates find their case's partition."""
    if not case_id.startswith("C") or "-" not in case_id:
        raise ValueError(f"not a cityops case id: {case_id!r}")
    return case_id[1:].split("-", 1)[0]


_M_PER_DEG_LAT = 111_194.93   # metres per degree on the 6,371,008.8 m mean sphere
_BUCKET_DEG = 0.002            # correlation buckets: about 220 m north-south, 190 m east-west at 31 N
_NO_POS = -(10**9)


def _bucket(category: str, lon: float | None, lat: float | None) -> tuple[str, int, int]:
    if lon is None or lat is None:
        return (category, _NO_POS, _NO_POS)
    return (category, int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG)))


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance in metres by the equirectangular approximation: within 0.1% of the great-circle distance at
    the few-hundred-metre scale correlation works at, and several times cheaper than haversine."""
    dy = (lat2 - lat1) * _M_PER_DEG_LAT
    dx = (lon2 - lon1) * _M_PER_DEG_LAT * math.cos(math.radians((lat1 + lat2) * 0.5))
    return math.sqrt(dx * dx + dy * dy)


class CaseBook:
    """Every case of one partition key, the ids they absorbed, and the recurrence history they imply.

    Each operation returns an `Outcome` of what it changed; given one (`out`), it adds to that and returns it.

    The book is persisted case by case (`dirty` names the cases changed since `take_dirty`), so a busy grid's
    write cost is the cases that changed, not the whole book; `from_cases` rebuilds it after a restart.
    """

    def __init__(self, key: str, policy: CorrelationPolicy | None = None) -> None:
        self.key = key
        self.policy = policy or CorrelationPolicy()
        self.cases: dict[str, Case] = {}
        self.seen: set[str] = set()                       # event and update ids already applied
        # (category, lat bucket, lon bucket) -> case ids: correlation looks only at nearby buckets
        self.buckets: dict[tuple[str, int, int], list[str]] = {}
        self.clock: datetime = datetime(1970, 1, 1, tzinfo=UTC)
        self.dirty: set[str] = set()
        self.parked: dict[str, list[CaseUpdate]] = {}     # case id -> updates that arrived before the case
        self.parked_dirty: set[str] = set()
        self._recurrence: RecurrenceHistory | None = None
        self._escalation_clock: datetime | None = None
        # (due_at, case id) of dispatched cases, soonest first: escalation looks only at what fell due. Entries of
        # cases since handled, escalated or dispatched anew are stale and skipped when they come up.
        self._due: list[tuple[datetime, str]] = []

    @classmethod
    def from_cases(cls, key: str, cases: Iterable[Case], policy: CorrelationPolicy | None = None) -> CaseBook:
        book = cls(key, policy)
        for case in sorted(cases, key=lambda c: (c.created_at, c.case_id)):
            book._index(case)
            if case.status in OPEN_STATES and not case.escalated and case.due_at is not None:
                heapq.heappush(book._due, (case.due_at, case.case_id))
            for t in (case.created_at, case.last_report_at, case.closed_at, case.resolved_at):
                if t is not None:
                    book._tick(t)
        return book

    def _index(self, case: Case) -> None:
        self.cases[case.case_id] = case
        self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
        self.seen.update(case.event_ids)
        self.seen.update(case.update_ids)

    def take_dirty(self) -> list[Case]:
        """The cases changed since the last call (to persist), and forget that they were."""
        changed = [self.cases[c] for c in sorted(self.dirty) if c in self.cases]
        self.dirty.clear()
        return changed

    def take_parked_dirty(self) -> dict[str, list[CaseUpdate]]:
        """Parked updates changed since the last call, per case id (an empty list: none parked any more)."""
        changed = {cid: list(self.parked.get(cid, ())) for cid in sorted(self.parked_dirty)}
        self.parked_dirty.clear()
        return changed

    def expire_parked(self, out: Outcome | None = None) -> Outcome:
        """Refuse parked updates whose case has not appeared within `park_hours` of stream time."""
        out = Outcome() if out is None else out
        limit = self.clock - timedelta(hours=self.policy.park_hours)
        for cid in [c for c, ups in self.parked.items() if max(u.at for u in ups) < limit]:
            for u in self.parked.pop(cid):
                out.refusals.append(f"{u.action} {cid}: no such case (waited {self.policy.park_hours:g} h)")
            self.parked_dirty.add(cid)
        return out

    # -- reports ----------------------------------------------------------------------------------------

    def add_event(self, event: Event, router: Router, out: Outcome | None = None) -> Outcome:
        """Merge a located report into an open (or recently closed) case, or open and dispatch a new one."""
        out = Outcome() if out is None else out
        if event.event_id in self.seen:
            out.duplicates += 1
            return out
        self._tick(event.occurred_at)
        self.seen.add(event.event_id)
        case = self._match(event)
        loc = event.location
        if case is None:
            case = self._open(event, router, out)
            merged = False
        else:
            merged = True
            case.event_ids.append(event.event_id)
            case.reports += 1
            if event.occurred_at < case.created_at:
                # an earlier report processed later (topics are consumed independently): the case was found
                # when, where and by whom that report says
                self._refirst(case, event)
            if event.source not in case.sources:
                case.sources.append(event.source)
            case.last_report_at = max(case.last_report_at or event.occurred_at, event.occurred_at)
            ended = case.closed_at or case.resolved_at
            if case.status in HANDLED_STATES and ended is not None and event.occurred_at >= ended:
                self._reopen(case, event.occurred_at, "system", f"new {event.source} report {event.event_id}",
                             router, out)
            else:
                case.revision += 1
        out.events.append(EventRow(
            event_id=event.event_id, source=event.source, case_id=case.case_id, category=event.category,
            cell=(loc.cell or "") if loc else "", subdistrict=(loc.subdistrict or "") if loc else "",
            received_at=event.occurred_at, ingested_at=datetime.now(UTC), lon=event.lon, lat=event.lat,
            snapped=bool(loc and loc.snapped), merged=merged, grid_version=loc.grid_version if loc else "",
            grid_kind=(loc.grid_kind or "") if loc else "", request_type=event.request_type or "",
            sensor_type=event.sensor_type or "", value=event.value, description=event.description,
        ))
        self._changed(case, out)
        return out

    def _refirst(self, case: Case, event: Event) -> None:
        """Make `event` the case's first report: its time, source and place become the case's."""
        self.buckets[_bucket(case.category, case.lon, case.lat)].remove(case.case_id)
        loc = event.location
        case.created_at = event.occurred_at
        case.discovered_by = DISCOVERED_BY[event.source]
        case.lon, case.lat = event.lon, event.lat
        if loc is not None and loc.cell:
            case.cell, case.subdistrict, case.grid_kind = loc.cell, loc.subdistrict or "", loc.grid_kind or ""
        case.first_event = _event_to_dict(event)
        self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
        self._recurrence = None

    def _changed(self, case: Case, out: Outcome) -> None:
        out.cases[case.case_id] = case.row()
        out.states[case.case_id] = case.state()
        self.dirty.add(case.case_id)

    def _match(self, event: Event) -> Case | None:
        """The case this report is about: same category (or the sensor's own case), near enough, recent enough."""
        radius, window = self.policy.for_category(event.category)
        reopen_window = timedelta(days=self.policy.reopen_days)
        best: tuple[float, Case] | None = None
        cell = event.location.cell if event.location else None
        for case_id in self._nearby(event.category, event.lon, event.lat, radius):
            case = self.cases[case_id]
            if event.sensor_id is not None and case.sensor_id == event.sensor_id and case.status in OPEN_STATES:
                return case
            if case.status in HANDLED_STATES:
                if case.closed_at is None and case.resolved_at is None:
                    continue
                ended = case.closed_at or case.resolved_at
                assert ended is not None
                # a report made after the case was handled reopens it; one made while it was open (processed
                # late: the topics are consumed independently) is simply one more report of it
                if not case.created_at - window <= event.occurred_at <= ended + reopen_window:
                    continue
            else:
                last = case.last_report_at or case.created_at
                if not case.created_at - window <= event.occurred_at <= last + window:
                    continue
            if event.lon is not None and event.lat is not None and case.lon is not None and case.lat is not None:
                if abs(event.lat - case.lat) * _M_PER_DEG_LAT > radius:
                    continue            # cheap reject before the distance
                d = distance_m(event.lon, event.lat, case.lon, case.lat)
            elif cell and cell == case.cell:
                d = radius          # no coordinates on one side: the same cell counts as "near"
            else:
                continue
            if d <= radius and (best is None or d < best[0]):
                best = (d, case)
        return best[1] if best else None

    def _nearby(self, category: str, lon: float | None, lat: float | None, radius_m: float) -> list[str]:
        """Ids of cases of `category` in the buckets within `radius_m` of the point (all cases without a position
        are included; an event without a position is compared with every case of its category in the book)."""
        found = list(self.buckets.get((category, _NO_POS, _NO_POS), ()))
        if lon is None or lat is None:
            for (cat, _, _), ids in self.buckets.items():
                if cat == category:
                    found += ids
            return list(dict.fromkeys(found))
        reach = int(radius_m // (_BUCKET_DEG * _M_PER_DEG_LAT * 0.85)) + 1
        iy, ix = int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG))
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                found += self.buckets.get((category, iy + dy, ix + dx), ())
        return found

    def _open(self, event: Event, router: Router, out: Outcome) -> Case:
        loc = event.location
        case = Case(
            case_id=case_id_for(self.key, event.event_id), category=event.category,
            cell=(loc.cell or "") if loc else "", subdistrict=(loc.subdistrict or "") if loc else "",
            grid_kind=(loc.grid_kind or "") if loc else "", lon=event.lon, lat=event.lat,
            discovered_by=DISCOVERED_BY[event.source], created_at=event.occurred_at,
            last_report_at=event.occurred_at, reports=1, sources=[event.source],
            grid_version=loc.grid_version if loc else "", sensor_id=event.sensor_id,
            first_event=_event_to_dict(event), event_ids=[event.event_id],
        )
        self._transition(case, "new", "", "system", event.occurred_at, f"opened from {event.event_id}", out)
        # dispatch before indexing: the recurrence condition counts the cell's *earlier* cases
        self._dispatch(case, event, router, out, kind="dispatch", at=event.occurred_at)
        self._index(case)
        for update in sorted(self.parked.pop(case.case_id, ()), key=lambda u: u.at):
            self.parked_dirty.add(case.case_id)
            self.apply_update(update, router, out)
        if self._recurrence is not None:
            self._recurrence.record(case.cell, case.category, event.occurred_at)
        return case

    # -- updates from teams -----------------------------------------------------------------------------

    def apply_update(self, update: CaseUpdate, router: Router, out: Outcome | None = None) -> Outcome:
        """Apply a team's accept / resolve / verify / reject / reopen, or refuse it with a reason."""
        out = Outcome() if out is None else out
        if update.update_id in self.seen:
            out.duplicates += 1
            return out
        case = self.cases.get(update.case_id)
        if case is None:
            # The case's first report may still be on its way (the topics are consumed independently):
            # park the update until the case opens, or until `park_hours` of stream time say it never will.
            parked = self.parked.setdefault(update.case_id, [])
            if all(p.update_id != update.update_id for p in parked):
                parked.append(update)
                self.parked_dirty.add(update.case_id)
            return out
        refusal = self._check(case, update)
        if refusal:
            out.refusals.append(f"{update.action} {update.case_id} by {update.team}/{update.actor}: {refusal}")
            return out
        self._tick(update.at)
        self.seen.add(update.update_id)
        case.update_ids.append(update.update_id)
        note = update.note
        if update.action == "accept":
            self._transition(case, "accepted", update.team, update.actor, update.at, note, out)
        elif update.action == "resolve":
            case.resolved_at = update.at
            self._transition(case, "resolved", update.team, update.actor, update.at, note, out)
        elif update.action == "verify":
            self._transition(case, "verified", update.team, update.actor, update.at, note, out)
            case.closed_at = update.at
            self._transition(case, "closed", update.team, update.actor, update.at, "verified and closed", out)
        elif update.action == "reject":
            self._transition(case, "rejected", update.team, update.actor, update.at, note, out)
            self._dispatch(case, _event_from_dict(case.first_event), router, out, kind="reroute", at=update.at,
                           avoid=update.team, why=f"rejected by {update.team}: {note or 'no reason given'}")
        elif update.action == "reopen":
            self._reopen(case, update.at, update.actor, note or "verification failed", router, out,
                         team=update.team)
        self._changed(case, out)
        return out

    @staticmethod
    def _check(case: Case, u: CaseUpdate) -> str | None:
        s = case.status
        if u.action in ("accept", "resolve", "reject") and u.team != case.team:
            return f"case is assigned to {case.team}, not {u.team}"
        if u.action == "accept":
            return None if s == "dispatched" else f"cannot accept a case that is {s}"
        if u.action == "resolve":
            return None if s in OPEN_STATES else f"cannot resolve a case that is {s}"
        if u.action == "reject":
            return None if s in OPEN_STATES else f"cannot reject a case that is {s}"
        if u.action == "verify":
            if u.team != "supervision":
                return "only supervision verifies a case"
            return None if s == "resolved" else f"cannot verify a case that is {s}"
        if u.action == "reopen":
            if u.team != "supervision":
                return "only supervision reopens a case"
            return None if s in HANDLED_STATES else f"cannot reopen a case that is {s}"
        return f"unknown action {u.action}"

    # -- dispatch, reopen, escalation ---------------------------------------------------------------------

    def _dispatch(self, case: Case, event: Event, router: Router, out: Outcome, *, kind: str, at: datetime,
                  avoid: str | None = None, why: str = "") -> None:
        decision = router.decide(event, self.recurrence())
        team, reason = decision.team, decision.reason
        if avoid is not None and team == avoid:
            team = "supervision" if avoid != "supervision" else "handling"
            reason = f"{why}; the rules pick {avoid} again, so {team} decides ({decision.reason})"
        elif why:
            reason = f"{why}; {reason}"
        case.dispatches += 1
        case.team, case.priority, case.rule_id, case.reason = team, decision.priority, decision.rule_id, reason
        case.escalate_to = decision.escalate_to
        case.ruleset_version = decision.ruleset_version
        case.due_at = at + decision.sla
        case.escalated = False
        heapq.heappush(self._due, (case.due_at, case.case_id))
        case.dispatched_at_place = [case.lat, case.lon, case.cell, case.subdistrict, list(case.sources)]
        self._transition(case, "dispatched", team, "system", at, f"{decision.rule_id}: {reason}", out)
        out.assignments.append(Assignment(
            assignment_id=_assignment_id(case.case_id, case.dispatches, kind), case_id=case.case_id, team=team,
            priority=decision.priority, due_at=case.due_at, category=case.category, cell=case.cell,
            subdistrict=case.subdistrict, lat=case.lat, lon=case.lon, rule_id=decision.rule_id, reason=reason,
            sources=tuple(case.sources), created_at=at, kind=kind, escalate_to=decision.escalate_to,
            notify=tuple(decision.notify), tags=tuple(decision.tags), ruleset_version=decision.ruleset_version,
            grid_version=case.grid_version,
        ))

    def _reopen(self, case: Case, at: datetime, actor: str, why: str, router: Router, out: Outcome,
                team: str = "") -> None:
        case.reopened += 1
        case.closed_at = None
        case.resolved_at = None
        self._transition(case, "reopened", team, actor, at, why, out)
        self._dispatch(case, _event_from_dict(case.first_event), router, out, kind="reopen", at=at,
                       why=f"reopened: {why}")

    def escalate_due(self, out: Outcome | None = None) -> Outcome:
        """`escalate_overdue` by the book's own stream clock, checked whenever that clock has moved: called after
        each report or update, so what escalates when depends only on the book's input, never on batch
        boundaries or timers (a replay after a crash escalates exactly as the first run did)."""
        if self.clock == self._escalation_clock:
            return Outcome() if out is None else out
        self._escalation_clock = self.clock
        return self.escalate_overdue(out=out)

    def escalate_overdue(self, now: datetime | None = None, out: Outcome | None = None) -> Outcome:
        """Notify supervision (or the rule's escalate-to team) once for each case past its due time, the most
        overdue first."""
        out = Outcome() if out is None else out
        clock = now or self.clock
        due: list[tuple[datetime, str]] = self._due
        overdue: list[tuple[datetime, Case]] = []
        while due and due[0][0] < clock:
            at, case_id = heapq.heappop(due)
            case = self.cases.get(case_id)
            if case is not None and case.due_at == at and case.status in OPEN_STATES and not case.escalated:
                overdue.append((at, case))
        for due_at, case in overdue:
            if not case.escalated:
                case.escalated = True
                target = case.escalate_to or "supervision"
                self._transition(case, "escalated", target, "system", due_at,
                                 f"overdue since {_iso(due_at)} ({case.team})", out)
                lat, lon, cell, subdistrict, sources = case.dispatched_at_place or [
                    case.lat, case.lon, case.cell, case.subdistrict, case.sources]
                out.assignments.append(Assignment(
                    assignment_id=_assignment_id(case.case_id, case.dispatches, "escalation"),
                    case_id=case.case_id, team=target, priority=1, due_at=due_at, category=case.category,
                    cell=cell, subdistrict=subdistrict, lat=lat, lon=lon,
                    rule_id=case.rule_id, reason=f"overdue: {case.team} had until {_iso(due_at)}",
                    sources=tuple(sources), created_at=due_at, kind="escalation",
                    ruleset_version=case.ruleset_version, grid_version=case.grid_version,
                ))
                self._changed(case, out)
        return out

    def _transition(self, case: Case, status: str, team: str, actor: str, at: datetime, reason: str,
                    out: Outcome) -> None:
        case.transitions += 1
        case.revision += 1
        if status not in ("rejected", "reopened", "escalated"):
            case.status = status
        out.transitions.append(TransitionRow(case_id=case.case_id, seq=case.transitions, status=status,
                                             team=team or case.team, actor=actor, at=at, reason=reason))

    # -- housekeeping -------------------------------------------------------------------------------------

    def recurrence(self) -> RecurrenceHistory:
        if self._recurrence is None:
            self._recurrence = RecurrenceHistory()
            for case in self.cases.values():
                self._recurrence.record(case.cell, case.category, case.created_at)
        return self._recurrence

    def _tick(self, at: datetime) -> None:
        if at > self.clock:
            self.clock = at

    def prune(self) -> list[str]:
        """Forget cases closed more than `keep_days` ago (by the stream clock); return their ids, which the
        caller deletes from the table. Their reports' ids go with them: a replay that old is not expected."""
        keep = self.clock - timedelta(days=self.policy.keep_days)
        gone = [c.case_id for c in self.cases.values() if c.status == "closed" and c.closed_at and c.closed_at < keep]
        for cid in gone:
            case = self.cases.pop(cid)
            self.buckets[_bucket(case.category, case.lon, case.lat)].remove(cid)
            self.seen.difference_update(case.event_ids)
            self.seen.difference_update(case.update_ids)
            self.dirty.discard(cid)
        if gone:
            self._recurrence = None
        return gone


def _assignment_id(case_id: str, dispatch_no: int, kind: str) -> str:
    return "A" + hashlib.sha1(f"{case_id}#{dispatch_no}#{kind}".encode()).hexdigest()[:20]


_ISO_TEXT: dict[datetime, str] = {}     # a case's times are formatted again at each change: remember them


def _iso(at: datetime) -> str:
    text = _ISO_TEXT.get(at)
    if text is None:
        if len(_ISO_TEXT) >= 100_000:
            _ISO_TEXT.clear()
        text = _ISO_TEXT[at] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


_DT_FIELDS = ("created_at", "due_at", "closed_at", "resolved_at", "last_report_at")


def _case_to_dict(case: Case) -> dict[str, Any]:
    d = dict(case.__dict__)
    for k in _DT_FIELDS:
        d[k] = d[k].timestamp() if d[k] is not None else None
    return d


def _case_from_dict(d: dict[str, Any]) -> Case:
    d = dict(d)
    for k in _DT_FIELDS:
        d[k] = datetime.fromtimestamp(d[k], UTC) if d[k] is not None else None
    return Case(**d)


def _event_to_dict(event: Event) -> dict[str, Any]:
    loc = event.location
    return {
        "event_id": event.event_id, "source": event.source, "category": event.category,
        "occurred_at": event.occurred_at.timestamp(), "lon": event.lon, "lat": event.lat,
        "description": event.description, "request_type": event.request_type, "channel": event.channel,
        "sensor_id": event.sensor_id, "sensor_type": event.sensor_type, "value": event.value,
        "location": None if loc is None else [loc.cell, loc.subdistrict, loc.grid_kind, loc.grid_version,
                                              loc.snapped],
    }


def _event_from_dict(d: dict[str, Any]) -> Event:
    loc = d.get("location")
    return Event(
        event_id=d["event_id"], source=d["source"], category=d["category"],
        occurred_at=datetime.fromtimestamp(d["occurred_at"], UTC), lon=d["lon"], lat=d["lat"],
        description=d.get("description") or "", request_type=d.get("request_type"), channel=d.get("channel"),
        sensor_id=d.get("sensor_id"), sensor_type=d.get("sensor_type"), value=d.get("value"),
        location=None if loc is None else Location(cell=loc[0], subdistrict=loc[1], grid_kind=loc[2],
                                                   grid_version=loc[3], snapped=bool(loc[4])),
    )


def with_location(event: Event, location: Location) -> Event:
    return replace(event, location=location)
