"""核实 (check before filing, docs/cases.md §2.4; the rules' `check_first`, rules/checkfirst.py): a public report
of a listed category opens a case that a patrol checks on site before it is filed.

The case book (pipeline.stages.cases) calls in here at three points: when it opens a case (`needs_check`,
`start_check`), when an update arrives for a case (`check_refusal`) and when the patrol answers
(`answer_check`). The check is a round of its own (kind `check`, team `patrol`, its `due_at` the check deadline),
so the book's escalation, the `case_rounds` table and restarts need nothing new:

    new -> checking --confirm--> (confirmed) -> dispatched by the rules, the case deadline from the confirm
                    --void-----> void (作废: not a problem, or nothing there; the case ends, never filed)
           a check not answered by its deadline escalates like an overdue round (it stays `checking`)

Only the patrol answers (`team: patrol`, its inspector as `actor`); while a case is checked nothing else is
accepted for it. Reports that join a case being checked join it as usual (they wait for the same check).

The book, its Outcome and Router (pipeline.stages.cases) are typed Any here: that module imports this one, and
the stages import no cycle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.model.cases import Case
from pipeline.model.events import CaseUpdate, Event
from rules.checkfirst import NO_CHECK_FIRST, CheckFirst
from rules.durations import format_duration

CHECKER = "patrol"
CHECK_ACTIONS = frozenset({"confirm", "void"})


def _rules(router: Any) -> CheckFirst:
    found: CheckFirst | None = getattr(router, "check_first", None)
    return NO_CHECK_FIRST if found is None else found


def needs_check(router: Any, event: Event, case: Case) -> bool:
    """Whether the case `event` opens is checked before filing: a problem case from a public report of a
    category the rules list."""
    return case.kind == "problem" and _rules(router).required(event.source, event.category)


def start_check(book: Any, case: Case, decision: Any, router: Any, out: Any, now: datetime) -> None:
    """Send the new case to the patrol for its check, due `within` from now."""
    within = _rules(router).within
    book._new_round(case, CHECKER, "check", decision, now, now + within,
                    f"核实 check on site before filing, within {format_duration(within)}", router, out)
    book._transition(case, "checking", CHECKER, "system", now, "public report: checked before filing", out)


def check_refusal(case: Case, u: CaseUpdate) -> str | None:
    """Why `u` cannot apply to `case` as far as checks go (None: it may); only called for a case being checked or
    a check action."""
    if case.status != "checking":
        return f"cannot {u.action} a case that is {case.status}: only a case being checked is confirmed or voided"
    if u.action not in CHECK_ACTIONS:
        return f"the case is being checked (核实) by the patrol: it is filed only after a confirm, not {u.action}"
    if u.team != CHECKER:
        return f"only the patrol checks a report before filing, not {u.team}"
    return None


def answer_check(book: Any, case: Case, u: CaseUpdate, out: Any) -> bool:
    """End the check round with the patrol's answer; True when confirmed (the caller files the case)."""
    r = case.round
    assert r is not None and r.kind == "check"
    r.ended_at = u.at
    if u.action == "confirm":
        r.outcome = "confirmed"
        book._transition(case, "confirmed", u.team, u.actor, u.at, u.note or "属实 confirmed on site", out)
        return True
    r.outcome = "void"
    case.closed_at = u.at
    if book._recurrence is not None and case.kind == "problem":    # no problem: not a case of the cell's history
        book._recurrence.forget(case.cell, case.category, case.created_at)
    book._transition(case, "void", u.team, u.actor, u.at, u.note or "作废 not a problem", out)
    return False
