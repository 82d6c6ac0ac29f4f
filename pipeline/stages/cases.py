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

The book is built in three layers, each a module: `pipeline.stages.correlate.CaseIndex` (the cases, their
indexes and which case a report is about, §2), `pipeline.stages.lifecycle.CaseLifecycle` (rounds, the teams'
updates and escalation, §3, §4, §7, and the `Outcome` of a call) and here `CaseBook`, which takes reports in,
opens cases and forgets old ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pipeline.model.cases import OPEN_STATES, Case, CorrelationPolicy, case_id_for, partition_key
from pipeline.model.events import CaseUpdate, Event
from pipeline.model.firstevent import first_event
from pipeline.model.records import EventRow
from pipeline.model.sources import DISCOVERED_BY
from pipeline.stages.checks import needs_check, start_check
from pipeline.stages.lifecycle import CaseLifecycle, Outcome, Router

_PRUNE_EVERY = timedelta(hours=1)


class CaseBook(CaseLifecycle):
    """Every case of one book key, the ids they absorbed, and the recurrence history they imply.

    Each operation returns an `Outcome` of what it changed; given one (`out`), it adds to that and returns it.
    The book is persisted case by case (`dirty` names the cases changed since `take_dirty`), so a busy book's
    write cost is the cases that changed, not the whole book; `from_cases` rebuilds it after a restart.
    """

    def __init__(self, key: str, policy: CorrelationPolicy | None = None) -> None:
        super().__init__(key, policy)
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

    def _open(self, event: Event, router: Router, out: Outcome, now: datetime) -> Case:
        loc = event.location
        case = Case(
            case_id=case_id_for(partition_key(loc), event.event_id), category=event.category,
            cell=(loc.cell or "") if loc else "", subdistrict=(loc.subdistrict or "") if loc else "",
            grid_kind=(loc.grid_kind or "") if loc else "", lon=event.lon, lat=event.lat,
            discovered_by=DISCOVERED_BY[event.source], created_at=event.occurred_at, kind=event.kind,
            scope=event.scope, sensor_id=event.sensor_id, last_report_at=event.occurred_at, reports=1,
            sources=[event.source], grid_version=loc.grid_version if loc else "",
            first_event=first_event(event), event_ids=[event.event_id],
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

    # -- housekeeping -------------------------------------------------------------------------------------

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
