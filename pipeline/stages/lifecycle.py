"""A case's course (docs/cases.md §3, §4, §7): rounds of dispatch, what teams report back, escalation when late.

`CaseLifecycle` is the second layer of a case book (`pipeline.stages.cases.CaseBook`), over the correlation
indexes of `pipeline.stages.correlate`: it dispatches rounds, applies or refuses the teams' updates (parking
those whose case has not opened yet), keeps the heap of deadlines and escalates what falls due. Every call says
what it changed in an `Outcome`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pipeline.model.assignments import Assignment, assignment_id
from pipeline.model.cases import (
    OPEN_STATES,
    Case,
    CorrelationPolicy,
    Round,
    iso,
)
from pipeline.model.events import CaseUpdate, Event
from pipeline.model.firstevent import event_of
from pipeline.model.records import CaseRow, EventRow, PatrolReportRow, RoundRow, TransitionRow
from pipeline.stages.checks import CHECK_ACTIONS, answer_check, check_refusal
from pipeline.stages.correlate import CaseIndex
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


class CaseLifecycle(CaseIndex):
    """Rounds, team updates and escalation over a book's cases; `dirty` names the cases changed since the book
    last persisted them."""

    def __init__(self, key: str, policy: CorrelationPolicy | None = None) -> None:
        super().__init__(key, policy)
        self.dirty: set[str] = set()
        self.parked: dict[str, list[CaseUpdate]] = {}     # case id -> updates that arrived before the case
        self.parked_dirty: set[str] = set()
        # (deadline, case id, "handle" | "verify", round): escalation looks only at what fell due. Entries of
        # rounds since ended or escalated, or of deadlines since moved, are stale and skipped when they come up.
        self._deadlines: list[tuple[datetime, str, str, int]] = []

    def _watch(self, case: Case) -> None:
        """Put the current round's pending deadline (handling or verification) on the escalation heap."""
        r = case.round
        if r is None:
            return
        if case.status in OPEN_STATES and r.escalated_at is None:
            heapq.heappush(self._deadlines, (r.due_at, case.case_id, "handle", r.number))
        elif case.status == "resolved" and r.verify_due_at is not None and r.verify_escalated_at is None:
            heapq.heappush(self._deadlines, (r.verify_due_at, case.case_id, "verify", r.number))

    # -- a more urgent report joins (§2.1) ----------------------------------------------------------------

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
                decision = router.decide(event_of(case.first_event), _Without(self.recurrence(), case))
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

    def _file(self, case: Case, decision: Decision, router: Router, out: Outcome, now: datetime) -> None:
        """File the case: its first dispatch by `decision`, its case deadline counted from `now`."""
        due = now + decision.sla
        case.case_due_at, case.first_dispatched_at = due, now
        self._new_round(case, decision.team, "dispatch", decision, now, due, decision.reason, router, out)

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
        decision = router.decide(event_of(case.first_event), _Without(self.recurrence(), case))
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
