"""One case's life by docs/cases.md §2.1, §3 and §4: its dispatch rounds and the teams' feedback, in time order.

The planner decides *what* happens to a case (its first route, whether a team rejects it, whether the first check
fails, what the rules say about each later report); this module decides *when*, with realistic delays, and
applies the specification's consequences: a deadline extension (§4.6) moves the first round's deadline later
before it passes (decided per case apart from the main random stream, so a simulation's other choices do not
change), a more urgent merged report supersedes the round (§2.1, due
`min(current, now + sla)`), a rejection starts a round with a fresh due time (§4.3), a failed check sends the case
back to the team that resolved it with the same priority and the same due time (§4.4), and the verifier is
supervision, or a patrol when supervision resolved it (§4). Every report of a case is made before its resolution,
so no report sends a case back for rework.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipeline.simulate.catalog import FEEDBACK_NOTES
from pipeline.simulate.model import Action, Round
from pipeline.simulate.spec import ACCEPT_LIMIT, Route, verifier

MARGIN = timedelta(minutes=15)        # kept between a report and the resolution that follows it


@dataclass(frozen=True, slots=True)
class Merge:
    """A later report of the case, and the rules' decision about it (§2.1) under both readings of "with the
    case's `discovered_by`": the report as it is, and the report as if from the case's first source."""

    at: datetime
    index: int                        # the report's position among the case's reports
    as_is: Route
    as_case: Route


@dataclass
class Course:
    """What the planner decided for a case; `run` fills in the when."""

    first_at: datetime
    route: Route
    merges: list[Merge] = field(default_factory=list)
    reject_to: Route | None = None    # the first team rejects; the case goes here (§4.3), None: no rejection
    rework: bool = False              # the first check fails (§4.4)
    last_report: datetime | None = None
    open_until: datetime | None = None   # stays open (not resolved) until then
    fast: bool = False                # a chronic spot's crew: closed within hours, before the spot's next return
    extend: bool = False              # the first team has its deadline extended once (延期, §4.6)


@dataclass
class Life:
    """The outcome: rounds, feedback, the reports dropped (their merge would re-route under one reading of the
    specification and not under the other), and when the case closes (None: never, within the plan)."""

    rounds: list[Round]
    actions: list[Action]
    dropped: set[int]
    closed_at: datetime | None


def new_round(route: Route, kind: str, why: str, at: datetime, due: datetime | None = None) -> Round:
    return Round(team=route.team, route=route, kind=kind, why=why, dispatched_at=at,
                 due_at=at + route.sla if due is None else due, accept_due_at=at + ACCEPT_LIMIT[route.priority])


def run(course: Course, rng: random.Random, staff: Callable[[str, random.Random], str]) -> Life:
    """The case's rounds and feedback from its first dispatch (at its first report) to its verification."""
    cur = new_round(course.route, "dispatch", "first", course.first_at)
    rounds, acts, dropped = [cur], [], set()
    merges = deque(course.merges)
    state, t = "dispatched", course.first_at
    rejected = reworked = False
    floor = max([x for x in (course.last_report, course.open_until) if x is not None], default=course.first_at)

    def act(at: datetime, action: str, team: str) -> None:
        acts.append(Action(at, action, team, staff(team, rng), rng.choice(FEEDBACK_NOTES[action]), len(rounds) - 1))

    while True:
        if state == "dispatched":
            action = "reject" if course.reject_to is not None and not rejected and len(rounds) == 1 else "accept"
            at = t + _accept_delay(cur, course.fast, rng)
        elif state == "accepted":
            action, at = "resolve", _resolve_time(cur, t, floor, course.fast, rng)
        else:
            action = "reopen" if course.rework and not reworked else "verify"
            at = t + timedelta(minutes=rng.randint(15, 60) if course.fast else rng.randint(30, 600))
        if state != "resolved" and merges and merges[0].at < at:
            m = merges.popleft()
            urgent_as_is, urgent_as_case = m.as_is.priority < cur.priority, m.as_case.priority < cur.priority
            if urgent_as_is != urgent_as_case or (urgent_as_is and m.as_is != m.as_case):
                dropped.add(m.index)        # the truth could not say which: the report is not made
            elif urgent_as_is:
                cur.ended_at, cur.ending = m.at, "superseded"
                cur = new_round(m.as_is, "reroute", "merge", m.at, min(cur.due_at, m.at + m.as_is.sla))
                rounds.append(cur)
                state, t = "dispatched", m.at
            continue
        assert not (state == "resolved" and merges), "a report after the resolution would send it back"
        if action == "resolve" and course.extend and len(rounds) == 1 and not cur.extensions:
            _extend(cur, at, acts, staff)
        team = verifier(cur.team) if action in ("verify", "reopen") else cur.team
        act(at, action, team)
        t = at
        if action == "reject":
            assert course.reject_to is not None
            rejected = True
            cur.ended_at, cur.ending = at, "rejected"
            cur = new_round(course.reject_to, "reroute", "reject", at)
            rounds.append(cur)
            state = "dispatched"
        elif action == "accept":
            cur.accepted_at, state = at, "accepted"
        elif action == "resolve":
            cur.resolved_at, state = at, "resolved"
        elif action == "reopen":
            reworked = True
            cur.ended_at, cur.ending = at, "reworked"
            # back to the team whose fix failed, same priority, and no new time (§4.4)
            cur = new_round(cur.route, "rework", "rework", at, cur.due_at)
            rounds.append(cur)
            state = "dispatched"
        else:
            cur.ended_at, cur.ending, cur.verified_by = at, "verified", team
            return Life(rounds, acts, dropped, at)


def _extend(cur: Round, resolve_at: datetime, acts: list[Action], staff: Callable[[str, random.Random], str]
            ) -> None:
    """The team asks for (and gets) one more SLA before its deadline passes and before it resolves; drawn from
    the round's own random stream."""
    assert cur.accepted_at is not None
    lo = cur.accepted_at + timedelta(minutes=1)
    hi = min(cur.due_at, resolve_at) - timedelta(minutes=1)
    if hi - lo < timedelta(minutes=2):
        return
    own = random.Random(f"extend:{cur.team}:{cur.dispatched_at.isoformat()}")
    at = (lo + (hi - lo) * own.random()).replace(microsecond=0)
    until = cur.due_at + cur.route.sla
    acts.append(Action(at, "extend", cur.team, staff(cur.team, own), own.choice(FEEDBACK_NOTES["extend"]), 0,
                       until))
    cur.due_at, cur.extensions, cur.extended_at = until, cur.extensions + 1, at


def _accept_delay(cur: Round, fast: bool, rng: random.Random) -> timedelta:
    if fast:
        return timedelta(minutes=rng.randint(3, 15))
    urgent = cur.route.sla <= timedelta(hours=2)
    return timedelta(minutes=rng.randint(3, 20) if urgent else rng.randint(10, 120))


def _resolve_time(cur: Round, accepted: datetime, floor: datetime, fast: bool, rng: random.Random) -> datetime:
    """A resolution some share of the SLA after acceptance (log-normal: most on time, some late), never before
    the case's last report or its `open_until` (plus a margin)."""
    if fast:
        at = accepted + timedelta(minutes=rng.randint(20, 90))
    else:
        factor = math.exp(rng.gauss(math.log(0.45), 0.7))
        at = max(accepted + cur.route.sla * factor, accepted + timedelta(minutes=5))
    return max(at, floor + MARGIN).replace(microsecond=0)
