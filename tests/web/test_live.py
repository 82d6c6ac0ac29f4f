"""The live board: queues, cell health, hot spots and ordering, checked against direct recounts."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.web.live import LiveBoard, health_score, parse_time
from tests.web.helpers import NOW, case_state

TEAMS = ["enforcement", "handling", "supervision"]
STATUSES = ["dispatched", "accepted", "resolved", "verified", "closed"]


def board_with(states: list[dict[str, object]]) -> LiveBoard:
    board = LiveBoard({"310109003": "欧阳路街道", "310109004": "曲阳路街道"}, due_soon=timedelta(hours=2),
                      clock=lambda: NOW)
    board.apply_batch([("case-state", s, 0.0) for s in states])
    return board


case_strategy = st.builds(
    lambda i, team, status, due_min, cell: case_state(f"C{i}", team=team, status=status,
                                                       due_in=timedelta(minutes=due_min), cell=cell),
    st.integers(0, 40), st.sampled_from(TEAMS), st.sampled_from(STATUSES), st.integers(-600, 600),
    st.sampled_from(["310109003001001", "310109003001002", "310109004002001"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(case_strategy, max_size=40))
def test_queues_match_a_direct_count(states: list[dict[str, object]]) -> None:
    """Per team: open = dispatched/accepted, overdue = open with due before now, due soon = within 2 h."""
    board = board_with(states)
    latest = {s["case_id"]: s for s in states}        # the same revision: the last one applied wins
    q = board.queues()
    for team in TEAMS:
        mine = [s for s in latest.values() if s["team"] == team and s["status"] in ("dispatched", "accepted")]
        dues = [parse_time(s["due_at"]) for s in mine]
        assert q["teams"][team]["open"] == len(mine)
        assert q["teams"][team]["overdue"] == sum(1 for d in dues if d is not None and d < NOW)
        soon = NOW + timedelta(hours=2)
        assert q["teams"][team]["due_soon"] == sum(1 for d in dues if d is not None and NOW <= d < soon)
    assert sum(s["open"] for s in q["subdistricts"]) == q["total"]["open"]


def test_older_revision_does_not_replace_a_newer_one() -> None:
    board = board_with([case_state("C1", status="accepted", revision=5)])
    board.apply_batch([("case-state", case_state("C1", status="dispatched", revision=3), 0.0)])
    assert board.cases["C1"]["status"] == "accepted"


def test_listeners_hear_each_change_once_per_batch() -> None:
    board = board_with([])
    heard: list[int] = []
    unsubscribe = board.subscribe(heard.append)
    board.apply_batch([("case-state", case_state("C1"), 0.0), ("case-state", case_state("C2"), 0.0)])
    board.apply_batch([("case-state", None, 0.0)])          # a tombstone of nothing known: no change
    unsubscribe()
    board.apply_batch([("case-state", case_state("C3"), 0.0)])
    assert heard == [1]


def test_health_formula_and_hotspots() -> None:
    """Health follows the documented formula; hot spots rank cells by open cases."""
    states = [case_state("A1", cell="310109003001001", due_in=timedelta(hours=-1)),
              case_state("A2", cell="310109003001001", discovered_by="patrol"),
              case_state("A3", cell="310109003001001", status="closed", reopened=1),
              case_state("B1", cell="310109004002001")]
    board = board_with(states)
    cells = board.cells()
    # cell A: 2 open, 1 overdue, recurrent = 1 reopening + (3 cases of E0501 - 1) = 3, discovery 1/3
    expected = 100 - 8 * 2 - 12 * 1 - 10 * 3 - 10 * (1 - 1 / 3)
    assert cells["310109003001001"]["health"] == round(expected, 1)
    assert health_score(0, 0, 0, 0, 0) == 100.0
    assert health_score(20, 20, 20, 20, 0) == 0.0
    hot = board.hotspots()
    assert [h["cell"] for h in hot] == ["310109003001001"]
    assert hot[0]["subdistrict"] == "欧阳路街道"


def test_feed_order_overdue_then_priority_then_newest() -> None:
    states = [case_state("old-p1", priority=1, created_ago=timedelta(hours=5)),
              case_state("new-p1", priority=1, created_ago=timedelta(hours=1)),
              case_state("p3", priority=3, created_ago=timedelta(minutes=5)),
              case_state("late", priority=4, due_in=timedelta(minutes=-5)),
              case_state("done", status="resolved", priority=1)]
    board = board_with(states)
    order = [c["case_id"] for c in board.cases_where(lambda c: True)]
    assert order == ["late", "new-p1", "old-p1", "p3", "done"]


def test_unlocated_placed_and_deadletters() -> None:
    board = board_with([])
    ticket = {"event_id": "hotline:T1", "category": "E0501", "occurred_at": NOW.timestamp(),
              "address": "某路 13912345678", "description": "电话 13912345678"}
    board.apply_batch([("unlocated", ticket, 0.0),
                       ("deadletter", {"source_topic": "raw.hotline", "reason": "bad"}, NOW.timestamp())])
    listed = board.unlocated_list()
    assert listed[0]["event_id"] == "hotline:T1"
    assert "13912345678" not in listed[0]["description"] and "13912345678" not in listed[0]["address"]
    assert board.deadletters_recent(300, NOW.timestamp()) == 1
    board.apply_batch([("placed", {"event_id": "hotline:T1"}, 0.0)])
    assert board.unlocated == {}


def test_assignments_are_kept_once_and_feed_dispatch_latency() -> None:
    board = board_with([])
    a = {"assignment_id": "A1", "case_id": "C1", "kind": "dispatch", "created_at": "2026-01-01T00:00:00Z"}
    ts = parse_time("2026-01-01T00:00:02Z")
    assert ts is not None
    board.apply_batch([("assignment", a, ts.timestamp()), ("assignment", a, ts.timestamp())])
    assert len(board.dispatches["C1"]) == 1
    assert list(board.dispatch_latencies) == [2.0]


def test_closed_cases_are_forgotten_after_a_week() -> None:
    old = case_state("C-old", status="closed", closed_at=(NOW - timedelta(days=8)).isoformat())
    recent = case_state("C-new", status="closed", closed_at=(NOW - timedelta(days=1)).isoformat())
    board = board_with([old, recent])
    assert set(board.cases) == {"C-new"}
