"""核实 (check before filing, docs/cases.md §2.4, rules/checkfirst.py, pipeline/stages/checks.py): with the shipped
Hongkou rules plus `check_first: {categories: [E0501], within: 1h}`, a 12345 report of a street vendor (E0501;
at 02:00 Shanghai the rules send it to enforcement, priority 3, 4 h) waits for a patrol's check before it is
filed. Minute 0 is 2 March 2026 02:00 Shanghai (tests.pipeline.test_case_semantics)."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest

from pipeline.stages.cases import CaseBook
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import default_decoder
from rules.engine import DEFAULT_RULES, Ruleset, load_ruleset
from rules.errors import RulesError
from tests.pipeline.test_case_semantics import at, only, report, stage_items, upd

CHECK_BLOCK = "\ncheck_first:\n  categories: [E0501]\n  within: 1h\n"


@cache
def checked_rules() -> Ruleset:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hongkou-checked.yaml"
        path.write_text(DEFAULT_RULES.read_text(encoding="utf-8") + CHECK_BLOCK, encoding="utf-8")
        return load_ruleset(path)


def opened() -> tuple[CaseStage, dict[str, CaseBook], str]:
    stage = CaseStage(checked_rules())
    books: dict[str, CaseBook] = {}
    out = stage.apply(stage_items(report("hotline:T1", 0, "E0501")), books)
    return stage, books, only(out.cases)


def test_a_public_report_of_a_listed_category_goes_to_the_patrol_first() -> None:
    stage = CaseStage(checked_rules())
    books: dict[str, CaseBook] = {}
    out = stage.apply(stage_items(report("hotline:T1", 0, "E0501")), books)
    cid = only(out.cases)
    row = out.cases[cid]
    (a,) = out.assignments
    assert (a.team, a.kind, a.due_at) == ("patrol", "check", at(60))
    assert (row.status, row.team, row.case_due_at, row.first_dispatched_at) == ("checking", "patrol", None, None)
    assert [t.status for t in out.transitions] == ["new", "dispatched", "checking"]
    (r,) = out.rounds.values()
    assert (r.kind, r.team, r.due_at, r.outcome) == ("check", "patrol", at(60), "open")
    # a patrol's own report and a category not listed are filed at once
    patrol = stage.apply(stage_items(report("patrol:P1", 5, "E0501", source="patrol", east_m=900)), books)
    litter = stage.apply(stage_items(report("hotline:T2", 6, "E0102", east_m=1800)), books)
    assert [(x.team, x.kind) for x in patrol.assignments + litter.assignments] == [
        ("enforcement", "dispatch"), ("handling", "dispatch")]


def test_a_confirm_files_the_case_and_dispatches_it_by_the_rules_from_then() -> None:
    stage, books, cid = opened()
    out = stage.apply(stage_items(upd(cid, "confirm", "patrol", 30)), books)
    assert not out.refusals
    (a,) = out.assignments
    assert (a.team, a.kind, a.priority, a.due_at) == ("enforcement", "dispatch", 3, at(30 + 4 * 60))
    row = out.cases[cid]
    assert (row.status, row.case_due_at, row.first_dispatched_at) == ("dispatched", at(270), at(30))
    assert [t.status for t in out.transitions] == ["confirmed", "dispatched"]
    check = out.rounds[(cid, 1)]
    assert (check.outcome, check.ended_at) == ("confirmed", at(30))
    # from now on the case is an ordinary one: enforcement accepts it
    assert not stage.apply(stage_items(upd(cid, "accept", "enforcement", 40)), books).refusals


def test_a_void_ends_the_case_unfiled_and_a_later_report_is_a_new_case() -> None:
    stage, books, cid = opened()
    out = stage.apply(stage_items(upd(cid, "void", "patrol", 20)), books)
    assert not out.refusals and out.assignments == []
    row = out.cases[cid]
    assert (row.status, row.closed_at, row.case_due_at) == ("void", at(20), None)
    assert out.rounds[(cid, 1)].outcome == "void"
    again = stage.apply(stage_items(report("hotline:T3", 60, "E0501")), books)
    assert only(again.cases) != cid


def test_a_voided_report_is_not_in_the_cells_recurrence_history_and_a_confirmed_one_is() -> None:
    stage, books, cid = opened()
    (book,) = books.values()
    case = book.cases[cid]
    history = book.recurrence()
    assert history.count(case.cell, "E0501", timedelta(days=30), at(10)) == 1
    stage.apply(stage_items(upd(cid, "void", "patrol", 20)), books)
    assert history.count(case.cell, "E0501", timedelta(days=30), at(30)) == 0
    book._recurrence = None              # rebuilt from the cases, as after a restart
    assert book.recurrence().count(case.cell, "E0501", timedelta(days=30), at(30)) == 0
    stage2, books2, cid2 = opened()
    stage2.apply(stage_items(upd(cid2, "confirm", "patrol", 20)), books2)
    (book2,) = books2.values()
    assert book2.recurrence().count(book2.cases[cid2].cell, "E0501", timedelta(days=30), at(30)) == 1


@pytest.mark.parametrize("action, team, minutes, reason", [
    ("accept", "enforcement", 10, "the case is being checked (核实) by the patrol: it is filed only after a "
                                  "confirm, not accept"),
    ("resolve", "patrol", 10, "the case is being checked (核实) by the patrol: it is filed only after a "
                              "confirm, not resolve"),
    ("confirm", "supervision", 10, "only the patrol checks a report before filing, not supervision"),
])
def test_while_checked_only_the_patrols_answer_is_taken(action: str, team: str, minutes: float,
                                                         reason: str) -> None:
    stage, books, cid = opened()
    out = stage.apply(stage_items(upd(cid, action, team, minutes)), books)
    assert out.refusals == [f"{action} {cid} by {team}/u1: {reason}"]
    assert books[next(iter(books))].cases[cid].status == "checking"


def test_a_confirm_of_a_case_not_being_checked_is_refused() -> None:
    stage, books, cid = opened()
    stage.apply(stage_items(upd(cid, "confirm", "patrol", 10)), books)
    out = stage.apply(stage_items(upd(cid, "void", "patrol", 20)), books)
    assert out.refusals == [f"void {cid} by patrol/u1: cannot void a case that is dispatched: only a case being "
                            "checked is confirmed or voided"]


def test_a_check_not_answered_in_time_escalates_once_and_a_late_confirm_still_files() -> None:
    stage, books, cid = opened()
    # a report elsewhere at minute 90 moves the stream clock past the 60-minute check deadline
    out = stage.apply(stage_items(report("hotline:T9", 90, "E0102", east_m=1500)), books)
    (esc,) = [a for a in out.assignments if a.case_id == cid]
    assert (esc.kind, esc.due_at, esc.created_at) == ("escalation", at(60), at(90))
    assert out.cases[cid].status == "checking" and out.rounds[(cid, 1)].escalated_at == at(90)
    quiet = stage.apply(stage_items(report("hotline:T10", 200, "E0102", east_m=2500)), books)
    assert not [a for a in quiet.assignments if a.case_id == cid]
    late = stage.apply(stage_items(upd(cid, "confirm", "patrol", 210)), books)
    assert [(a.team, a.kind) for a in late.assignments] == [("enforcement", "dispatch")]
    assert late.rounds[(cid, 1)].ended_at == at(210)


def test_a_second_public_report_joins_the_case_being_checked() -> None:
    stage, books, cid = opened()
    out = stage.apply(stage_items(report("hotline:T2", 10, "E0501", east_m=30)), books)
    assert only(out.cases) == cid and out.assignments == [] and out.cases[cid].status == "checking"


def test_the_worker_decodes_the_patrols_answers() -> None:
    d = default_decoder()
    for action in ("confirm", "void"):
        u = d.case_update(orjson.dumps({"case_id": "C310109009001-abc", "action": action, "team": "patrol",
                                        "actor": "insp-7", "at": "2026-03-01T18:30:00Z"}))
        assert (u.action, u.team) == (action, "patrol")


@pytest.mark.parametrize("block, problem", [
    ("check_first:\n  categories: [E9999]\n", "check_first.categories"),
    ("check_first:\n  categories: [E0501]\n  within: 0m\n", "check_first.within"),
    ("check_first:\n  within: 1h\n", "check_first"),
    ("check_first:\n  categories: [E0501]\n  by: patrol\n", "check_first.by"),
])
def test_a_bad_check_first_block_is_refused_with_its_key(tmp_path: Path, block: str, problem: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(DEFAULT_RULES.read_text(encoding="utf-8") + "\n" + block, encoding="utf-8")
    with pytest.raises(RulesError) as err:
        load_ruleset(path)
    assert any(f": {problem}: " in p for p in err.value.problems), err.value.problems
