"""Deadline extensions (延期, docs/cases.md §4.6): the team holding an open case may have its handling deadline
moved later, before it passes; the round counts it, the case deadline follows, escalation waits for the new
deadline, and everything else is refused with a reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pipeline.model.cases import Case
from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import default_decoder
from pipeline.stages.fields import InvalidEvent
from tests.pipeline.test_case_semantics import at, only, report, rules, stage_items, upd


def extend(cid: str, team: str, minutes: float, until_minutes: float) -> object:
    return replace(upd(cid, "extend", team, minutes), until=at(until_minutes))


def opened() -> tuple[CaseStage, dict[str, CaseBook], str]:
    """E0102 (litter) from a citizen: handling, due 12 h after the report."""
    stage = CaseStage(rules())
    books: dict[str, CaseBook] = {}
    cid = only(stage.apply(stage_items(report("hotline:T1", 0, "E0102")), books).cases)
    stage.apply(stage_items(upd(cid, "accept", "handling", 10)), books)
    return stage, books, cid


def test_an_extension_moves_the_round_and_case_deadline_and_escalation_waits_for_it() -> None:
    stage, books, cid = opened()
    (book,) = books.values()
    due = book.cases[cid].round.due_at  # type: ignore[union-attr]
    assert due == at(12 * 60)
    out = stage.apply(stage_items(extend(cid, "handling", 10 * 60, 36 * 60)), books)  # type: ignore[arg-type]
    assert not out.refusals
    (row,) = [r for r in out.rounds.values() if r.case_id == cid]
    assert (row.due_at, row.extensions) == (at(36 * 60), 1)
    assert (out.cases[cid].case_due_at, out.cases[cid].due_at, out.cases[cid].status) == (
        at(36 * 60), at(36 * 60), "accepted")
    assert [t.status for t in out.transitions] == ["extended"]
    # the old deadline passes without an escalation; the new one escalates
    quiet = stage.apply(stage_items(report("hotline:T8", 20 * 60, "E0501", east_m=900)), books)
    assert not [a for a in quiet.assignments if a.kind == "escalation" and a.case_id == cid]
    late = stage.apply(stage_items(report("hotline:T9", 37 * 60, "E0501", east_m=1200)), books)
    (esc,) = [a for a in late.assignments if a.kind == "escalation" and a.case_id == cid]
    assert esc.due_at == at(36 * 60) and esc.created_at == at(37 * 60)
    # the extension survives the case's state being saved and loaded (the worker's restart)
    again = Case.from_dict(orjson.loads(orjson.dumps(book.cases[cid].to_dict())))
    assert again.rounds[0].extensions == 1 and again.case_due_at == at(36 * 60)


@pytest.mark.parametrize("team, minutes, until, reason", [
    ("enforcement", 60, 36 * 60, "case is assigned to handling, not enforcement"),
    ("handling", 13 * 60, 36 * 60, "the deadline passed at 2026-03-02T06:00:00Z: an overdue case is not extended"),
    ("handling", 60, 12 * 60, "an extension must move the deadline (2026-03-02T06:00:00Z) later"),
])
def test_an_extension_is_refused_when_it_is_not_the_holders_or_too_late_or_no_later(
        team: str, minutes: float, until: float, reason: str) -> None:
    _, books, cid = opened()
    (book,) = books.values()
    out = book.apply_update(extend(cid, team, minutes, until), rules())  # type: ignore[arg-type]
    assert out.refusals == [f"extend {cid} by {team}/u1: {reason}"]
    assert book.cases[cid].round.extensions == 0  # type: ignore[union-attr]


def test_a_resolved_case_is_not_extended() -> None:
    _, books, cid = opened()
    (book,) = books.values()
    book.apply_update(upd(cid, "resolve", "handling", 60), rules())
    out = book.apply_update(extend(cid, "handling", 70, 36 * 60), rules())  # type: ignore[arg-type]
    assert out.refusals == [f"extend {cid} by handling/u1: cannot extend a case that is resolved"]


def test_the_decoder_reads_an_extensions_deadline_even_days_ahead() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    raw = {"case_id": "C1", "action": "extend", "team": "handling", "actor": "CZ0001", "at": now.isoformat(),
           "until": (now + timedelta(days=3)).isoformat()}
    u = default_decoder().case_update(orjson.dumps(raw))
    assert (u.action, u.until) == ("extend", now + timedelta(days=3))
    with pytest.raises(InvalidEvent, match="until: required field missing"):
        default_decoder().case_update(orjson.dumps({k: v for k, v in raw.items() if k != "until"}))
    with pytest.raises(InvalidEvent, match="until: time has no UTC offset"):
        default_decoder().case_update(orjson.dumps({**raw, "until": "2026-03-05T10:00:00"}))
