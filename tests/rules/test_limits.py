"""The ruleset's time limits: shipped defaults, what a file gives, lookups by priority, and hot reload."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from rules.engine import DEFAULT_RULES, RulesHolder, load_ruleset
from rules.limits import DEFAULT_TIME_LIMITS, TimeLimits
from rules.naive import NaiveRuleset
from tests.rules.factories import rules_file

M, H = timedelta(minutes=1), timedelta(hours=1)

RULES = """\
- {id: urgent, order: 1, when: {category: E04*}, then: {team: handling, priority: 1}}
- {id: routine, order: 2, when: {category: E01*}, then: {team: handling, priority: 2}}
- {id: slow, order: 3, when: {category: E05*}, then: {team: handling, priority: 4}}
"""


def limits_of(tmp: Path, block: str = "") -> TimeLimits:
    """The time limits of a ruleset using priorities 1, 2, 3 (default) and 4, with `block` appended."""
    path = rules_file(tmp, RULES, default="default: {team: handling}\n" + textwrap.dedent(block))
    return load_ruleset(path).time_limits


def test_shipped_defaults_are_the_documented_ones() -> None:
    """Without `time_limits`, dispatch is 30 min and accept / verify are docs/cases.md §3.2's per priority."""
    limits = DEFAULT_TIME_LIMITS
    assert limits.dispatch == 30 * M
    assert [limits.accept(p) for p in (1, 2, 3, 4)] == [15 * M, 1 * H, 2 * H, 4 * H]
    assert [limits.verify(p) for p in (1, 2, 3, 4)] == [2 * H, 8 * H, 24 * H, 48 * H]


def test_a_file_without_time_limits_gets_the_defaults(tmp_path: Path) -> None:
    """A ruleset that says nothing about time limits has the shipped defaults."""
    assert limits_of(tmp_path) == DEFAULT_TIME_LIMITS


def test_the_shipped_ruleset_writes_the_defaults_out() -> None:
    """rules/hongkou.yaml's explicit block equals the shipped defaults."""
    assert load_ruleset().time_limits == DEFAULT_TIME_LIMITS


def test_a_file_gives_its_own_limits(tmp_path: Path) -> None:
    """Every key given is read: dispatch, and accept and verify per priority."""
    limits = limits_of(tmp_path, """\
        time_limits:
          dispatch: 20m
          accept: {1: 10m, 2: 30m, 3: 1h, 4: 1d}
          verify: {1: 1h, 2: 4h, 3: 12h, 4: 1w}
        """)
    assert limits.dispatch == 20 * M
    assert [limits.accept(p) for p in (1, 2, 3, 4)] == [10 * M, 30 * M, 1 * H, 24 * H]
    assert [limits.verify(p) for p in (1, 2, 3, 4)] == [1 * H, 4 * H, 12 * H, 7 * 24 * H]


def test_the_naive_interpreter_reads_the_same_limits(tmp_path: Path) -> None:
    """The baseline router exposes the time limits the engine reads, given or left to the defaults."""
    path = rules_file(tmp_path, RULES, default="default: {team: handling}\n"
                      "time_limits: {dispatch: 20m, verify: {2: 6h, 4: 2d}}\n")
    assert NaiveRuleset(path).time_limits == load_ruleset(path).time_limits
    assert NaiveRuleset(path).time_limits.accept_by_priority == DEFAULT_TIME_LIMITS.accept_by_priority
    assert NaiveRuleset(DEFAULT_RULES).time_limits == DEFAULT_TIME_LIMITS


def test_keys_left_out_keep_their_defaults(tmp_path: Path) -> None:
    """Only `dispatch` given: accept and verify are the shipped ones; only `verify` given: the rest are."""
    limits = limits_of(tmp_path, "time_limits: {dispatch: 45m}\n")
    assert limits == TimeLimits(45 * M, DEFAULT_TIME_LIMITS.accept_by_priority, DEFAULT_TIME_LIMITS.verify_by_priority)
    limits = limits_of(tmp_path, "time_limits: {verify: {1: 1h}}\n")
    assert (limits.dispatch, limits.accept_by_priority) == (30 * M, DEFAULT_TIME_LIMITS.accept_by_priority)


def test_a_missing_priority_takes_the_nearest_more_urgent_limit(tmp_path: Path) -> None:
    """A map replaces the defaults whole; a priority it leaves out takes the largest priority given below it."""
    limits = limits_of(tmp_path, "time_limits: {accept: {1: 10m, 2: 40m, 4: 3h}, verify: {2: 6h}}\n")
    assert [limits.accept(p) for p in (1, 2, 3, 4, 5)] == [10 * M, 40 * M, 40 * M, 3 * H, 3 * H]
    # more urgent than every priority given: the most urgent limit given
    assert [limits.verify(p) for p in (1, 2, 3, 4, 5)] == [6 * H] * 5


@pytest.mark.parametrize("priority", [-1, 0, 6, 99])
def test_any_priority_gets_a_limit(priority: int) -> None:
    """A priority outside 1..5 (a case of an older ruleset, bad data) still gets an answer, never an error."""
    limits = DEFAULT_TIME_LIMITS
    assert limits.accept(priority) == (15 * M if priority < 1 else 4 * H)
    assert limits.verify(priority) == (2 * H if priority < 1 else 48 * H)


@pytest.mark.parametrize(("accept", "message"), [
    ((), "ascending priority"),
    (((2, H), (1, M)), "ascending priority"),
    (((1, H), (1, M)), "ascending priority"),
    (((1, timedelta(0)),), "longer than zero"),
])
def test_time_limits_built_in_code_are_checked(accept: tuple[tuple[int, timedelta], ...], message: str) -> None:
    """TimeLimits refuses empty, unordered, repeated and non-positive limits, as the file parser does."""
    with pytest.raises(ValueError, match=message):
        TimeLimits(30 * M, accept, DEFAULT_TIME_LIMITS.verify_by_priority)


def test_time_limits_are_frozen() -> None:
    """Nobody can change a running ruleset's limits."""
    with pytest.raises(AttributeError):
        DEFAULT_TIME_LIMITS.dispatch = H  # type: ignore[misc]


def test_changed_limits_are_a_new_version_that_the_holder_installs(tmp_path: Path) -> None:
    """Changing only `time_limits` changes the ruleset version, and the running ruleset exposes the new limits."""
    path = rules_file(tmp_path, RULES, default="default: {team: handling}\ntime_limits: {dispatch: 30m}\n")
    holder = RulesHolder(path)
    old = holder.current
    assert old.time_limits.dispatch == 30 * M
    path.write_text(path.read_text().replace("dispatch: 30m", "dispatch: 10m"), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert holder.maybe_reload() is True
    assert holder.current.version != old.version and holder.current.time_limits.dispatch == 10 * M
    path.write_text(path.read_text().replace("dispatch: 10m", "dispatch: 0m"), encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 4_000_000_000))
    assert holder.maybe_reload() is False   # refused: the running limits stay
    assert holder.current.time_limits.dispatch == 10 * M and "time_limits.dispatch" in (holder.last_error or "")
