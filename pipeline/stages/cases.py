"""Case books: merge reports into cases, dispatch them, apply what teams report back, escalate what is late.

The semantics are docs/cases.md; the section numbers below refer to it. A `CaseBook` holds every case of one
sub-district (`book_key`, §1.1). It is plain data: the worker keeps one per key in a changelog-backed table and
this module never touches Kafka or ClickHouse. Each method returns an `Outcome` with what must leave the worker
(assignments, ClickHouse rows, refusals); the book itself is the new state.

    new -> dispatched -> accepted -> resolved -> closed          (verify: resolved -> verified -> closed)
              ^  | reject        |          | reopen / a report after the resolution: rework (§4.4)
              |  +-> rules again |          +-> a rework round to the team whose fix failed, same due time
              +-- a more urgent report joins (§2.1): a reroute round

Every dispatch is a round (§3.1). What is overdue escalates once per round (§7); the caller says what time it
is (`now`): the book's stream clock, or the wall clock.

Idempotence: every event id and update id that changed the book is remembered, so a replayed input changes
nothing and produces nothing; ids (case, assignment) derive from the inputs, so a replay after a crash that lost
the book's last write produces the same ids again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pipeline.model.cases import (
    M_PER_DEG_LAT,
    OPEN_STATES,
    Assignment,
    Case,
    CorrelationPolicy,
    Round,
    assignment_id,
    case_id_for,
    distance_m,
    event_from_dict,
    event_to_dict,
    iso,
    partition_key,
)
from pipeline.model.events import CaseUpdate, Event
from pipeline.model.records import CaseRow, EventRow, PatrolReportRow, RoundRow, TransitionRow
from pipeline.model.sources import DISCOVERED_BY
from pipeline.stages.checks import CHECK_ACTIONS, answer_check, check_refusal, needs_check, start_check
from rules.compiled import Decision
from rules.limits import DEFAULT_TIME_LIMITS, TimeLimits
from rules.photos import AfterPhoto
from rules.recurrence import RecurrenceHistory

COMMAND = "command"        # the district command centre (指挥中心): where what nobody else may take escalates


class Router(Protocol):
    """What the book needs from the rules engine (rules.engine.Ruleset satisfies it): the decision without a due
    time, which the book computes. The ruleset's `time_limits` are read when it has them (rules.limits: else the
    shipped defaults)."""

    def decide(self, event: Event, recurrence: Any) -> Decision: ...


@dataclass
class Outcome:
    """What one call changed: messages to send and rows to store."""

    assignments: list[Assignment] = field(default_factory=list)
    cases: dict[str, CaseRow] = field(default_factory=dict)    # latest row per case
    states: dict[str, dict[str, Any]] = field(default_factory=dict)   # latest public state per case
    events: list[EventRow] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    rounds: dict[tuple[str, int], RoundRow] = field(default_factory=dict)   # latest row per (case, round)
    refusals: list[str] = field(default_factory=list)
    duplicates: int = 0
    patrol_reports: list[PatrolReportRow] = field(default_factory=list)   # pipeline.stages.patrolreports

    def extend(self, other: Outcome) -> None:
        self.assignments += other.assignments
        self.cases.update(other.cases)
        self.states.update(other.states)
        self.events += other.events
        self.transitions += other.transitions
        self.rounds.update(other.rounds)
        self.refusals += other.refusals
        self.duplicates += other.duplicates
        self.patrol_reports += other.patrol_reports


_BUCKET_DEG = 0.002            # correlation buckets: about 220 m north-south, 190 m east-west at 31 N
_NO_POS = -(10**9)
_PRUNE_EVERY = timedelta(hours=1)


def _bucket(category: str, lon: float | None, lat: float | None) -> tuple[str, int, int]:
    if lon is None or lat is None:
        return (category, _NO_POS, _NO_POS)
    return (category, int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG)))


def _needs_photo(case: Case, u: CaseUpdate, router: Router) -> str | None:
    """§4.2: a resolve of a category in the ruleset's `after_photo` must carry the after photo."""
    if u.action != "resolve" or u.photo_url:
        return None
    after: AfterPhoto | None = getattr(router, "after_photo", None)
    if after is None or not after.required(case.category):
        return None
    return f"a resolve of {case.category} needs an after photo (photo_url; the rules' after_photo)"


def _limits(router: Router) -> TimeLimits:
    limits: TimeLimits | None = getattr(router, "time_limits", None)
    return DEFAULT_TIME_LIMITS if limits is None else limits


class _Without:
    """The book's recurrence history without one case: what the rules saw when that case opened (a re-route
    never counts the case as its own predecessor, §5.1)."""

    def __init__(self, history: RecurrenceHistory, case: Case) -> None:
        self.history, self.case = history, case

    def count(self, cell: str, category_pattern: str, window: timedelta, at: datetime) -> int:
        n = self.history.count(cell, category_pattern, window, at)
        c = self.case
        if (c.kind == "problem" and cell == c.cell and at - window <= c.created_at <= at
                and (c.category == category_pattern
                     or (category_pattern.endswith("*") and c.category.startswith(category_pattern[:-1])))):
            n -= 1
        return n


class CaseBook:
    """Every case of one book key, the ids they absorbed, and the recurrence history they imply.

    Each operation returns an `Outcome` of what it changed; given one (`out`), it adds to that and returns it.
    The book is persisted case by case (`dirty` names the cases changed since `take_dirty`), so a busy book's
    write cost is the cases that changed, not the whole book; `from_cases` rebuilds it after a restart.
    """

    def __init__(self, key: str, policy: CorrelationPolicy | None = None) -> None:
        self.key = key
        self.policy = policy or CorrelationPolicy()
        self.cases: dict[str, Case] = {}
        self.seen: set[str] = set()                       # event and update ids already applied
        # (category, lat bucket, lon bucket) -> problem case ids: merging looks only at nearby buckets
        self.buckets: dict[tuple[str, int, int], list[str]] = {}
        self.by_sensor: dict[str, list[str]] = {}        # sensor id -> its cases, oldest first
        self.by_cell: dict[tuple[str, str], list[str]] = {}   # (cell, category) -> problem case ids
        self.clock: datetime = datetime(1970, 1, 1, tzinfo=UTC)
        self.dirty: set[str] = set()
        self.parked: dict[str, list[CaseUpdate]] = {}     # case id -> updates that arrived before the case
        self.parked_dirty: set[str] = set()
        self._recurrence: RecurrenceHistory | None = None
        # (deadline, case id, "handle" | "verify", round): escalation looks only at what fell due. Entries of
        # rounds since ended or escalated, or of deadlines since moved, are stale and skipped when they come up.
        self._deadlines: list[tuple[datetime, str, str, int]] = []
        self._next_prune: datetime | None = None

    @classmethod
    def from_cases(cls, key: str, cases: Iterable[Case], policy: CorrelationPolicy | None = None) -> CaseBook:
        book = cls(key, policy)
        for case in sorted(cases, key=lambda c: (c.created_at, c.case_id)):
            book._index(case)
            book._watch(case)
            for t in (case.created_at, case.last_report_at, case.last_update_at):
                if t is not None:
                    book.tick(t)
        return book

    # -- indexes ------------------------------------------------------------------------------------------

    def _index(self, case: Case) -> None:
        self.cases[case.case_id] = case
        if case.kind == "problem":
            self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
            self.by_cell.setdefault((case.cell, case.category), []).append(case.case_id)
        if case.sensor_id is not None:
            self.by_sensor.setdefault(case.sensor_id, []).append(case.case_id)
        self.seen.update(case.event_ids)
        self.seen.update(case.update_ids)

    def _unplace(self, case: Case) -> None:
        if case.kind == "problem":
            self.buckets[_bucket(case.category, case.lon, case.lat)].remove(case.case_id)
            self.by_cell[(case.cell, case.category)].remove(case.case_id)

    def _place(self, case: Case) -> None:
        if case.kind == "problem":
            self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
            self.by_cell.setdefault((case.cell, case.category), []).append(case.case_id)

    def _watch(self, case: Case) -> None:
        """Put the current round's pending deadline (handling or verification) on the escalation heap."""
        r = case.round
        if r is None:
            return
        if case.status in OPEN_STATES and r.escalated_at is None:
            heapq.heappush(self._deadlines, (r.due_at, case.case_id, "handle", r.number))
        elif case.status == "resolved" and r.verify_due_at is not None and r.verify_escalated_at is None:
            heapq.heappush(self._deadlines, (r.verify_due_at, case.case_id, "verify", r.number))

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

    # -- reports (§2) -------------------------------------------------------------------------------------

    def add_event(self, event: Event, router: Router, out: Outcome | None = None,
                  now: datetime | None = None) -> Outcome:
        """Merge a located report into the case it is about, or open and dispatch a new one. `now` stamps the
        dispatches it makes (default: the book's stream clock)."""
        out = Outcome() if out is None else out
        if event.event_id in self.seen:
            out.duplicates += 1
            return out
        self.tick(event.occurred_at)
        now = max(self.clock if now is None else now, event.occurred_at)
        self.seen.add(event.event_id)
        found = self._match(event)
        if found is None:
            case = self._open(event, router, out, now)
            merged = False
        else:
            case, rework = found
            merged = True
            self._join(case, event)
            if rework:
                self._rework(case, now, "system", "", f"new {event.source} report {event.event_id} after the "
                             f"resolution", router, out)
            elif case.status in OPEN_STATES and case.status != "checking":
                self._reroute_if_more_urgent(case, event, router, out, now)
        loc = event.location
        out.events.append(EventRow(
            event_id=event.event_id, source=event.source, case_id=case.case_id, category=event.category,
            cell=(loc.cell or "") if loc else "", subdistrict=(loc.subdistrict or "") if loc else "",
            received_at=event.occurred_at, ingested_at=datetime.now(UTC), lon=event.lon, lat=event.lat,
            snapped=bool(loc and loc.snapped), merged=merged, grid_version=loc.grid_version if loc else "",
            grid_kind=(loc.grid_kind or "") if loc else "", request_type=event.request_type or "",
            sensor_type=event.sensor_type or "", value=event.value, description=event.description,
            address=event.address or "", address_id=event.address_id or "", media_url=event.media_url or "",
            attributes=event.attributes or "",
        ))
        self._changed(case, out)
        return out

    def _join(self, case: Case, event: Event) -> None:
        case.event_ids.append(event.event_id)
        case.reports += 1
        if event.occurred_at < case.created_at:
            # an earlier report processed later (topics are consumed independently): the case was found
            # when, where and by whom that report says
            self._refirst(case, event)
        if event.source not in case.sources:
            case.sources.append(event.source)
        case.last_report_at = max(case.last_report_at or event.occurred_at, event.occurred_at)
        if event.scope == "device" and case.sensor_id is None and event.sensor_id is not None:
            # a citizen's or patrol's case of this object: it is this sensor's from now on (§2 rule 3)
            case.sensor_id, case.scope = event.sensor_id, "device"
            self.by_sensor.setdefault(event.sensor_id, []).append(case.case_id)

    def _refirst(self, case: Case, event: Event) -> None:
        """Make `event` the case's first report: its time, source and place become the case's."""
        self._unplace(case)
        loc = event.location
        case.created_at = event.occurred_at
        case.discovered_by = DISCOVERED_BY[event.source]
        case.lon, case.lat = event.lon, event.lat
        if loc is not None and loc.cell:
            case.cell, case.subdistrict, case.grid_kind = loc.cell, loc.subdistrict or "", loc.grid_kind or ""
        case.first_event = event_to_dict(event)
        self._place(case)
        self._recurrence = None

    def _match(self, event: Event) -> tuple[Case, bool] | None:
        """The case this report is about (§2) and whether it sends that case back for rework; None: a new case."""
        radius, window = self.policy.for_category(event.category)
        best: tuple[float, datetime, str] | None = None
        found: tuple[Case, bool] | None = None
        person = event.scope == "person"
        for case, d in self._candidates(event, radius):
            verdict = self._admits(case, event, window, person)
            if verdict is None:
                continue
            rank = (d, case.created_at, case.case_id)
            if best is None or rank < best:
                best, found = rank, (case, verdict)
        return found

    def _candidates(self, event: Event, radius: float) -> Iterable[tuple[Case, float]]:
        """Cases the report may be about, with its distance to each (0 for its own sensor's cases)."""
        cases, sensor = self.cases, event.sensor_id
        if event.fault is not None:
            # a fault joins only its own device's fault case (§6.3)
            return [(cases[c], 0.0) for c in self.by_sensor.get(sensor or "", ()) if cases[c].kind == "device_fault"]
        own = [(cases[c], 0.0) for c in self.by_sensor.get(sensor or "", ())
               if cases[c].kind == "problem" and cases[c].category == event.category] if sensor else []
        if event.scope == "person":
            return own
        out = list(own)
        for cid in self._nearby(event.category, event.lon, event.lat, radius):
            case = cases[cid]
            if case.scope == "person" or case.sensor_id == sensor and sensor is not None:
                continue
            if event.scope == "device" and case.sensor_id is not None:
                continue        # another device's case: two bins are two cases
            d = self._distance(case, event, radius)
            if d is not None:
                out.append((case, d))
        return out

    @staticmethod
    def _distance(case: Case, event: Event, radius: float) -> float | None:
        if event.lon is not None and event.lat is not None and case.lon is not None and case.lat is not None:
            if abs(event.lat - case.lat) * M_PER_DEG_LAT > radius:
                return None             # cheap reject before the distance
            d = distance_m(event.lon, event.lat, case.lon, case.lat)
            return d if d <= radius else None
        cell = event.location.cell if event.location else None
        return radius if cell and cell == case.cell else None    # no coordinates: the same cell is "near"

    @staticmethod
    def _admits(case: Case, event: Event, window: timedelta, person: bool) -> bool | None:
        """§2 rule 5: None when the case's state and times exclude the report, else whether it means rework."""
        t = event.occurred_at
        if t < case.created_at - window:
            return None
        status = case.status
        if status in OPEN_STATES:
            return False
        if person:
            return None                 # a person's new alarm after the resolution is a new emergency
        if status == "resolved":
            return case.resolved_at is not None and t >= case.resolved_at
        if status == "closed" and case.closed_at is not None and t < case.closed_at:
            return False
        return None

    def _nearby(self, category: str, lon: float | None, lat: float | None, radius_m: float) -> list[str]:
        """Ids of problem cases of `category` in the buckets within `radius_m` of the point (all cases without a
        position are included; an event without a position is compared with every case of its category)."""
        found = list(self.buckets.get((category, _NO_POS, _NO_POS), ()))
        if lon is None or lat is None:
            for (cat, _, _), ids in self.buckets.items():
                if cat == category:
                    found += ids
            return list(dict.fromkeys(found))
        reach = int(radius_m // (_BUCKET_DEG * M_PER_DEG_LAT * 0.85)) + 1
        iy, ix = int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG))
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                found += self.buckets.get((category, iy + dy, ix + dx), ())
        return found

    def _open(self, event: Event, router: Router, out: Outcome, now: datetime) -> Case:
        loc = event.location
        case = Case(
            case_id=case_id_for(partition_key(loc), event.event_id), category=event.category,
            cell=(loc.cell or "") if loc else "", subdistrict=(loc.subdistrict or "") if loc else "",
            grid_kind=(loc.grid_kind or "") if loc else "", lon=event.lon, lat=event.lat,
            discovered_by=DISCOVERED_BY[event.source], created_at=event.occurred_at, kind=event.kind,
            scope=event.scope, sensor_id=event.sensor_id, last_report_at=event.occurred_at, reports=1,
            sources=[event.source], grid_version=loc.grid_version if loc else "",
            first_event=event_to_dict(event), event_ids=[event.event_id],
        )
        if case.kind == "problem":
            self._link_recurrence(case)
        self._transition(case, "new", "", "system", event.occurred_at, f"opened from {event.event_id}", out)
        # dispatch before indexing: the recurrence condition counts the cell's *earlier* cases (§5.1)
        decision = router.decide(event, self.recurrence())
        if needs_check(router, event, case):
            start_check(self, case, decision, router, out, now)      # 核实 first (pipeline.stages.checks)
        else:
            self._file(case, decision, router, out, now)
        self._index(case)
        if case.kind == "problem" and self._recurrence is not None:
            self._recurrence.record(case.cell, case.category, case.created_at)
        for update in sorted(self.parked.pop(case.case_id, ()), key=lambda u: u.at):
            self.parked_dirty.add(case.case_id)
            self.apply_update(update, router, out, now)
        return case

    def _file(self, case: Case, decision: Decision, router: Router, out: Outcome, now: datetime) -> None:
        """File the case: its first dispatch by `decision`, its case deadline counted from `now`."""
        due = now + decision.sla
        case.case_due_at, case.first_dispatched_at = due, now
        self._new_round(case, decision.team, "dispatch", decision, now, due, decision.reason, router, out)

    def _link_recurrence(self, case: Case) -> None:
        """§5: the most recently closed problem case of the kind in the cell (a sensor's: the same sensor's)
        closed at most `recurrence_days` before this one was found."""
        if case.sensor_id is not None and case.scope in ("person", "device"):
            ids = self.by_sensor.get(case.sensor_id, ())
        else:
            ids = self.by_cell.get((case.cell, case.category), ())
        oldest = case.created_at - timedelta(days=self.policy.recurrence_days)
        best: Case | None = None
        for cid in ids:
            prev = self.cases[cid]
            closed = prev.closed_at
            if (prev.kind == "problem" and prev.category == case.category and prev.status == "closed"
                    and closed is not None and oldest <= closed <= case.created_at
                    and (best is None or closed > (best.closed_at or closed))):
                best = prev
        if best is not None:
            case.recurrence_of, case.previous_closed_at = best.case_id, best.closed_at

    def _reroute_if_more_urgent(self, case: Case, event: Event, router: Router, out: Outcome,
                                now: datetime) -> None:
        """§2.1: a joining report the rules find more urgent than the case re-routes it."""
        decision = router.decide(event, _Without(self.recurrence(), case))
        if decision.priority >= case.priority:
            return
        current = case.round
        assert current is not None and case.due_at is not None and case.case_due_at is not None
        current.outcome, current.ended_at = "superseded", now
        due = min(case.due_at, now + decision.sla)
        case.case_due_at = min(case.case_due_at, due)
        self._new_round(case, decision.team, "reroute", decision, now, due,
                        f"re-routed: {event.event_id} is more urgent ({decision.reason})", router, out)

    # -- updates from teams (§4) --------------------------------------------------------------------------

    def apply_update(self, update: CaseUpdate, router: Router, out: Outcome | None = None,
                     now: datetime | None = None) -> Outcome:
        """Apply a team's accept / resolve / verify / reject / reopen, or refuse it with a reason. `now` stamps
        the dispatches it makes (default: the book's stream clock)."""
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
        refusal = self._check(case, update) or _needs_photo(case, update, router)
        if refusal:
            out.refusals.append(f"{update.action} {update.case_id} by {update.team}/{update.actor}: {refusal}")
            return out
        self.tick(update.at)
        now = max(self.clock if now is None else now, update.at)
        self.seen.add(update.update_id)
        case.update_ids.append(update.update_id)
        case.last_update_at = update.at
        self._apply(case, update, router, out, now)
        self._changed(case, out)
        return out

    def _apply(self, case: Case, u: CaseUpdate, router: Router, out: Outcome, now: datetime) -> None:
        r = case.round
        assert r is not None
        at, note = u.at, u.note
        if u.action == "accept":
            r.accepted_at = at
            self._transition(case, "accepted", u.team, u.actor, at, note, out)
        elif u.action == "resolve":
            verify_due = at + _limits(router).verify(case.priority)
            r.resolved_at, r.outcome, r.verify_due_at = at, "resolved", verify_due
            case.resolved_at, case.verify_due_at = at, verify_due
            case.after_photo_url = u.photo_url
            heapq.heappush(self._deadlines, (verify_due, case.case_id, "verify", r.number))
            self._transition(case, "resolved", u.team, u.actor, at, note, out, photo_url=u.photo_url)
        elif u.action == "verify":
            r.verified_at, r.verified_by, r.outcome, r.ended_at = at, u.team, "verified", at
            self._transition(case, "verified", u.team, u.actor, at, note, out)
            case.closed_at = at
            self._transition(case, "closed", u.team, u.actor, at, "verified and closed", out)
        elif u.action == "reject":
            r.outcome, r.ended_at = "rejected", at
            case.rejected += 1
            self._transition(case, "rejected", u.team, u.actor, at, note, out)
            self._route_after_reject(case, u.team, f"rejected by {u.team}: {note or 'no reason given'}", router,
                                     out, now)
        elif u.action == "reopen":
            self._rework(case, now, u.actor, u.team, note or "verification failed", router, out, at=at)
        elif u.action in CHECK_ACTIONS:
            if answer_check(self, case, u, out):
                decision = router.decide(event_from_dict(case.first_event), _Without(self.recurrence(), case))
                self._file(case, decision, router, out, now)
        elif u.action == "extend":
            assert u.until is not None
            before = r.due_at
            r.due_at, r.extensions, case.due_at = u.until, r.extensions + 1, u.until
            if case.case_due_at is None or case.case_due_at < u.until:
                case.case_due_at = u.until
            heapq.heappush(self._deadlines, (u.until, case.case_id, "handle", r.number))
            self._transition(case, "extended", u.team, u.actor, at,
                             f"due {iso(before)} -> {iso(u.until)}: {note or 'no reason given'}", out)

    @staticmethod
    def _verifier(case: Case) -> str:
        """Who checks the case's resolution: supervision; a patrol when supervision itself resolved it (§4)."""
        return "patrol" if case.team == "supervision" else "supervision"

    @classmethod
    def _check(cls, case: Case, u: CaseUpdate) -> str | None:
        s = case.status
        if u.at < case.created_at:
            return f"at {iso(u.at)} is before the case was created ({iso(case.created_at)})"
        if case.last_update_at is not None and u.at < case.last_update_at:
            return f"at {iso(u.at)} is before the case's last update ({iso(case.last_update_at)})"
        if s == "checking" or u.action in CHECK_ACTIONS:
            return check_refusal(case, u)
        if u.action in ("accept", "resolve", "reject", "extend") and u.team != case.team:
            return f"case is assigned to {case.team}, not {u.team}"
        if u.action == "accept":
            return None if s == "dispatched" else f"cannot accept a case that is {s}"
        if u.action in ("resolve", "reject"):
            return None if s in OPEN_STATES else f"cannot {u.action} a case that is {s}"
        if u.action == "extend":
            r = case.round
            if s not in OPEN_STATES or r is None:
                return f"cannot extend a case that is {s}"
            if u.at > r.due_at:
                return f"the deadline passed at {iso(r.due_at)}: an overdue case is not extended"
            if u.until is None or u.until <= r.due_at:
                return f"an extension must move the deadline ({iso(r.due_at)}) later"
            return None
        if u.action in ("verify", "reopen"):
            verifier = cls._verifier(case)
            if u.team != verifier:
                return f"only {verifier} checks this case (it was handled by {case.team}), not {u.team}"
            allowed = ("resolved",) if u.action == "verify" else ("resolved", "closed")
            return None if s in allowed else f"cannot {u.action} a case that is {s}"
        return f"unknown action {u.action}"

    # -- rounds (§3.1) ------------------------------------------------------------------------------------

    def _new_round(self, case: Case, team: str, kind: str, decision: Decision | None, at: datetime,
                   due: datetime, reason: str, router: Router, out: Outcome) -> None:
        """Dispatch the case to `team`: a new round, its transition and its assignment. `decision` None: the
        case's current routing stays (rework)."""
        if decision is not None:
            case.priority, case.rule_id = decision.priority, decision.rule_id
            case.escalate_to, case.ruleset_version = decision.escalate_to, decision.ruleset_version
        notify = decision.notify if decision is not None else ()
        tags = decision.tags if decision is not None else ()
        number = len(case.rounds) + 1
        r = Round(number=number, team=team, kind=kind, rule_id=case.rule_id, priority=case.priority,
                  dispatched_at=at, due_at=due, accept_due_at=at + _limits(router).accept(case.priority))
        case.rounds.append(r)
        case.team, case.reason, case.due_at = team, reason, due
        case.resolved_at = case.verify_due_at = None
        heapq.heappush(self._deadlines, (due, case.case_id, "handle", number))
        case.dispatched_at_place = [case.lat, case.lon, case.cell, case.subdistrict, list(case.sources)]
        self._transition(case, "dispatched", team, "system", at, f"{case.rule_id}: {reason}", out)
        out.assignments.append(Assignment(
            assignment_id=assignment_id(case.case_id, number, kind), case_id=case.case_id, team=team,
            priority=case.priority, due_at=due, category=case.category, cell=case.cell,
            subdistrict=case.subdistrict, lat=case.lat, lon=case.lon, rule_id=case.rule_id, reason=reason,
            sources=tuple(case.sources), created_at=at, kind=kind, escalate_to=case.escalate_to,
            notify=tuple(notify), tags=tuple(tags), ruleset_version=case.ruleset_version,
            grid_version=case.grid_version, round=number,
        ))

    def _route_after_reject(self, case: Case, rejecting: str, why: str, router: Router, out: Outcome,
                            now: datetime) -> None:
        """§4.3: the rules again (with the history the case's first report saw); when they pick the rejecting
        team again, supervision decides (handling, when supervision rejected). The new round's time is fresh."""
        decision = router.decide(event_from_dict(case.first_event), _Without(self.recurrence(), case))
        team, reason = decision.team, f"{why}; {decision.reason}"
        if team == rejecting:
            team = "supervision" if rejecting != "supervision" else "handling"
            reason = f"{why}; the rules pick {rejecting} again, so {team} decides ({decision.reason})"
        self._new_round(case, team, "reroute", decision, now, now + decision.sla, reason, router, out)

    def _rework(self, case: Case, now: datetime, actor: str, team: str, why: str, router: Router, out: Outcome,
                at: datetime | None = None) -> None:
        """§4.4: the resolution failed: back to the team that resolved it, same priority, same due time."""
        failed = case.round
        assert failed is not None
        at = now if at is None else at
        failed.outcome, failed.ended_at = "reworked", at
        case.reopened += 1
        case.closed_at = None
        self._transition(case, "reopened", team, actor, at, why, out)
        self._new_round(case, failed.team, "rework", None, now, failed.due_at, f"rework: {why}", router, out)

    # -- escalation (§7) ----------------------------------------------------------------------------------

    def escalate_due(self, out: Outcome | None = None) -> Outcome:
        """`escalate_overdue` by the book's own stream clock."""
        return self.escalate_overdue(self.clock, out)

    def escalate_overdue(self, now: datetime | None = None, out: Outcome | None = None) -> Outcome:
        """Escalate, stamped `now`, every round whose handling or verification deadline is before `now` and
        that has not been escalated for it yet, the most overdue first."""
        out = Outcome() if out is None else out
        now = self.clock if now is None else now
        heap = self._deadlines
        while heap and heap[0][0] < now:
            due, case_id, what, number = heapq.heappop(heap)
            case = self.cases.get(case_id)
            r = case.round if case is not None else None
            if case is None or r is None or r.number != number:
                continue
            if what == "handle":
                if case.status not in OPEN_STATES or r.escalated_at is not None or r.due_at != due:
                    continue
                r.escalated_at = now
                target = case.escalate_to or COMMAND
                target = COMMAND if target == case.team else target
                reason, kind = f"overdue since {iso(due)} ({case.team})", "escalation"
            else:
                if case.status != "resolved" or r.verify_escalated_at is not None or r.verify_due_at != due:
                    continue
                r.verify_escalated_at = now
                target = COMMAND
                reason = f"verification by {self._verifier(case)} overdue since {iso(due)}"
                kind = "verify-escalation"
            case.escalations += 1
            self._transition(case, "escalated", target, "system", now, reason, out)
            lat, lon, cell, subdistrict, sources = case.dispatched_at_place or [
                case.lat, case.lon, case.cell, case.subdistrict, case.sources]
            out.assignments.append(Assignment(
                assignment_id=assignment_id(case_id, number, kind), case_id=case_id, team=target, priority=1,
                due_at=due, category=case.category, cell=cell, subdistrict=subdistrict, lat=lat, lon=lon,
                rule_id=case.rule_id, reason=reason, sources=tuple(sources), created_at=now, kind="escalation",
                ruleset_version=case.ruleset_version, grid_version=case.grid_version, round=number,
            ))
            self._changed(case, out)
        return out

    # -- housekeeping -------------------------------------------------------------------------------------

    def _transition(self, case: Case, status: str, team: str, actor: str, at: datetime, reason: str,
                    out: Outcome, photo_url: str = "") -> None:
        case.transitions += 1
        if status not in ("rejected", "reopened", "escalated", "verified", "extended"):
            case.status = status
        out.transitions.append(TransitionRow(case_id=case.case_id, seq=case.transitions, status=status,
                                             team=team or case.team, actor=actor, at=at, reason=reason,
                                             photo_url=photo_url))

    def _changed(self, case: Case, out: Outcome) -> None:
        case.revision += 1
        out.cases[case.case_id] = case.row()
        out.states[case.case_id] = case.state()
        for r in case.rounds[-2:]:      # an operation changes at most the current round and the one it ended
            out.rounds[(case.case_id, r.number)] = case.round_row(r)
        self.dirty.add(case.case_id)

    def recurrence(self) -> RecurrenceHistory:
        """Problem cases opened, per cell and category (what the rules' `recurrence` condition counts, §5.1)."""
        if self._recurrence is None:
            self._recurrence = RecurrenceHistory()
            for case in self.cases.values():
                if case.kind == "problem":
                    self._recurrence.record(case.cell, case.category, case.created_at)
        return self._recurrence

    def tick(self, at: datetime) -> None:
        """Move the stream clock to `at` when it is later."""
        if at > self.clock:
            self.clock = at

    def prune(self) -> list[str]:
        """Forget cases closed more than `keep_days` ago (by the stream clock), at most once an hour of it;
        return their ids, which the caller deletes from the table. Their reports' ids go with them: a replay
        that old is not expected."""
        if self._next_prune is not None and self.clock < self._next_prune:
            return []
        self._next_prune = self.clock + _PRUNE_EVERY
        keep = self.clock - timedelta(days=self.policy.keep_days)
        gone = [c.case_id for c in self.cases.values()
                if c.status in ("closed", "void") and c.closed_at and c.closed_at < keep]
        for cid in gone:
            case = self.cases.pop(cid)
            self._unplace(case)
            if case.sensor_id is not None:
                self.by_sensor[case.sensor_id].remove(cid)
            self.seen.difference_update(case.event_ids)
            self.seen.difference_update(case.update_ids)
            self.dirty.discard(cid)
        if gone:
            self._recurrence = None
        return gone
