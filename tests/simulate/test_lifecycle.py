"""One case's course by docs/cases.md §2.1, §3 and §4: rounds and feedback in time order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from pipeline.simulate.lifecycle import Course, Merge, run
from pipeline.simulate.spec import ACCEPT_LIMIT, Route

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
CONSULT = Route("supervision", 4, timedelta(days=5), "hotline-consultation")
RUBBISH = Route("handling", 3, timedelta(hours=12), "garbage-and-cleaning")
EMERGENCY = Route("handling", 1, timedelta(hours=2), "emergencies")


def _staff(team: str, rng: random.Random) -> str:
    return f"{team[:2].upper()}{rng.randrange(100):04d}"


def test_a_more_urgent_merged_report_supersedes_the_round() -> None:
    """A consultation joined by a complaint about the same rubbish goes to handling, due min(current, now+sla)."""
    at = T0 + timedelta(minutes=3)          # before anyone accepts the consultation
    life = run(Course(T0, CONSULT, [Merge(at, 1, RUBBISH, RUBBISH)], last_report=at), random.Random(1), _staff)
    first, second = life.rounds[:2]
    assert (first.ending, first.ended_at) == ("superseded", at)
    assert (second.team, second.priority, second.why, second.dispatched_at) == ("handling", 3, "merge", at)
    assert second.due_at == min(first.due_at, at + RUBBISH.sla)
    assert second.accept_due_at == at + ACCEPT_LIMIT[3]
    assert all(a.team == "handling" for a in life.actions if a.action in ("accept", "resolve"))


def test_a_merge_the_specification_leaves_open_is_not_made() -> None:
    """When the report is more urgent read one way and not the other, the report is dropped, nothing changes."""
    at = T0 + timedelta(minutes=2)
    life = run(Course(T0, RUBBISH, [Merge(at, 1, EMERGENCY, RUBBISH)], last_report=at), random.Random(2), _staff)
    assert life.dropped == {1} and all(r.why != "merge" for r in life.rounds)


def test_a_less_urgent_merge_changes_nothing() -> None:
    at = T0 + timedelta(minutes=2)
    life = run(Course(T0, EMERGENCY, [Merge(at, 1, RUBBISH, RUBBISH)], last_report=at), random.Random(2), _staff)
    assert not life.dropped and [r.why for r in life.rounds] == ["first"]


def test_rework_goes_back_to_the_resolving_team_with_the_same_due_and_a_patrol_checks_supervision() -> None:
    """A failed check of supervision's fix (by a patrol) sends it back to supervision, same priority and due."""
    route = Route("supervision", 2, timedelta(hours=24), "chronic-hotspot")
    life = run(Course(T0, route, rework=True), random.Random(3), _staff)
    first, second = life.rounds
    assert first.ending == "reworked" and second.kind == "rework"
    assert (second.team, second.priority, second.due_at) == ("supervision", 2, first.due_at)
    checks = [a for a in life.actions if a.action in ("verify", "reopen")]
    assert [a.action for a in checks] == ["reopen", "verify"] and {a.team for a in checks} == {"patrol"}
    assert life.closed_at == checks[-1].at and life.rounds[-1].verified_by == "patrol"


def test_a_rejection_starts_a_round_elsewhere_with_a_fresh_due() -> None:
    life = run(Course(T0, RUBBISH, reject_to=Route("supervision", 3, timedelta(hours=12), "garbage-and-cleaning")),
               random.Random(4), _staff)
    first, second = life.rounds
    assert first.ending == "rejected" and life.actions[0].action == "reject" and life.actions[0].team == "handling"
    assert (second.team, second.why) == ("supervision", "reject")
    assert second.due_at == second.dispatched_at + timedelta(hours=12) > first.due_at
    assert life.actions[-1].team == "patrol"          # supervision's resolution, checked by a patrol


def test_nothing_is_resolved_before_the_last_report_or_while_it_must_stay_open() -> None:
    late = T0 + timedelta(hours=30)
    life = run(Course(T0, EMERGENCY, last_report=T0 + timedelta(hours=1), open_until=late), random.Random(5), _staff)
    resolve = next(a for a in life.actions if a.action == "resolve")
    assert resolve.at >= late + timedelta(minutes=15)
