"""Each kind of invalid rules file is refused with `file:line:column: key: what is wrong`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rules.engine import load_ruleset
from rules.errors import RulesError
from tests.rules.factories import HEADER, rules_file


def problems_of(path: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_ruleset(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line containing `needle` (computed from the file, not hard-coded)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def col_of(path: Path, needle: str) -> int:
    line = path.read_text().splitlines()[line_of(path, needle) - 1]
    return line.index(needle) + 1


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt key names its line, column and the key it probably meant."""
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {categroy: E0501}
          then: {team: enforcement}
        """)
    (problem,) = problems_of(path)
    assert problem == (f"{path}:{line_of(path, 'categroy')}:{col_of(path, 'categroy')}: "
                       "rules[a].when.categroy: unknown key; did you mean 'category'?")


def test_unknown_team(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          then: {team: enforcment}
        """)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'enforcment')}:{col_of(path, 'enforcment')}: "
                              "rules[a].then.team: unknown team 'enforcment'; did you mean 'enforcement'?")


def test_unknown_category_code(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {category: [E0501, E0577]}
          then: {team: enforcement}
        """)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'E0577')}:{col_of(path, 'E0577')}: rules[a].when.category: "
                              "unknown category code 'E0577'")


def test_category_prefix_matching_nothing(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {category: E09*}
          then: {team: enforcement}
        """)
    (problem,) = problems_of(path)
    assert "category prefix 'E09*' matches no code of the taxonomy" in problem


def test_bad_duration(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          then: {team: handling, sla: 2 hours}
        """)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, '2 hours')}:{col_of(path, '2 hours')}: rules[a].then.sla: "
                              "bad duration '2 hours'")


def test_bad_regex(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {regex: "井盖(丢失"}
          then: {team: handling}
        """)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'regex')}:{col_of(path, '井盖') - 1}: rules[a].when.regex: "
                              "bad regular expression")
    assert "missing ), unterminated subpattern" in problem


def test_missing_default(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "[]\n", default="")
    (problem,) = problems_of(path)
    assert problem == f"{path}:1:1: default: missing: every ruleset needs a default route for events that no " \
                      "rule matches"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes give several lines, in file order, in one error."""
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {time: "25:00-06:00", weekday: funday, value: "about 3"}
          then: {team: handling, priority: 9}
        - id: a
          order: 1
          then: {team: handling}
        """)
    problems = problems_of(path)
    keys = [p.split(": ")[1] for p in problems]
    assert keys == ["rules[a].when.time", "rules[a].when.weekday", "rules[a].when.value", "rules[a].then.priority",
                    "rules[a].id", "rules[a].order"]


def test_yaml_syntax_error_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(HEADER + "rules:\n  - id: [unclosed\n", encoding="utf-8")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:") and ": (yaml): " in problem


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          then: {team: handling}
          then: {team: enforcement}
        """)
    (problem,) = problems_of(path)
    assert f":{line_of(path, 'enforcement}')}:" in problem and "duplicate key" in problem


def test_escalating_to_the_same_team_is_refused(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          then: {team: handling, escalate_to: handling}
        """)
    (problem,) = problems_of(path)
    assert "rules[a].then.escalate_to: a case cannot escalate to its own team 'handling'" in problem


def test_wrong_kind_header(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "[]\n", header=HEADER.replace("dispatch-rules", "grid"))
    (problem,) = problems_of(path)
    assert problem == f"{path}:2:7: kind: expected 'dispatch-rules', got 'grid'"


def test_shadowed_rule_is_warned_about(tmp_path: Path) -> None:
    """A later rule whose events all go to an earlier, broader rule is reported as unreachable."""
    path = rules_file(tmp_path, """\
        - id: street-order
          order: 1
          when: {category: E05*, time: "06:00-23:00"}
          then: {team: enforcement}
        - id: vendors-morning
          order: 2
          when: {category: E0501, source: patrol, time: "07:00-09:00"}
          then: {team: enforcement, priority: 2}
        - id: vendors-night
          order: 3
          when: {category: E0501, time: "22:00-02:00"}
          then: {team: supervision}
        """)
    ruleset = load_ruleset(path)
    assert ruleset.warnings == [f"{path}:{line_of(path, 'id: vendors-morning')}:1: rules[vendors-morning]: "
                                "unreachable: every event it matches is taken first by rule 'street-order' "
                                f"(order 1, line {line_of(path, 'id: street-order')})"]


def test_rule_after_a_catch_all_is_shadowed(tmp_path: Path) -> None:
    path = rules_file(tmp_path, """\
        - id: everything
          order: 1
          then: {team: handling}
        - id: later
          order: 2
          when: {any: [{source: iot}, {located: false}]}
          then: {team: supervision}
        """)
    assert [w.split(": ")[1] for w in load_ruleset(path).warnings] == ["rules[later]"]


def test_shipped_ruleset_is_valid_and_has_no_warnings() -> None:
    ruleset = load_ruleset()
    assert ruleset.warnings == []
    assert ruleset.version.startswith("2024.11.2+")


# --- fault --------------------------------------------------------------------------------------------------

def test_unknown_fault_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt fault name is refused at its line and column, with the name it probably meant."""
    path = rules_file(tmp_path, """\
        - id: a
          order: 1
          when: {fault: [stuck, silnet]}
          then: {team: handling}
        """)
    (problem,) = problems_of(path)
    assert problem == (f"{path}:{line_of(path, 'silnet')}:{col_of(path, 'silnet')}: rules[a].when.fault: "
                       "unknown fault 'silnet'; did you mean 'silent'? (faults: stuck, silent, error, or any)")


@pytest.mark.parametrize(("when", "needle", "key", "message"), [
    ("{fault: broken}", "broken", "rules[a].when.fault", "unknown fault 'broken' (faults: stuck, silent, error, "
     "or any)"),
    ("{fault: [any, stuck]}", "[any", "rules[a].when.fault", "`any` already means every fault: write `fault: any` "
     "alone"),
    ("{fault: []}", "[]", "rules[a].when.fault", "must not be an empty list"),
    ("{fault: [stuck, 3]}", "3", "rules[a].when.fault", "unknown fault '3' (faults: stuck, silent, error, or any)"),
    ("{any: [{fault: stuck}, {source: iot}]}", "fault", "rules[a].when.any[0].fault",
     "`fault` goes at the top of a rule's `when`, not inside all / any / not: it makes the whole rule one for "
     "device faults"),
    ("{not: {fault: stuck}}", "fault", "rules[a].when.not.fault", "`fault` goes at the top of a rule's `when`"),
    ("{all: [{fault: stuck}]}", "fault", "rules[a].when.all[0].fault", "`fault` goes at the top of a rule's `when`"),
])
def test_bad_fault_conditions_name_line_and_key(tmp_path: Path, when: str, needle: str, key: str,
                                                message: str) -> None:
    """Wrong `fault` values, and `fault` nested in all / any / not, are refused at their line, column and key."""
    path = rules_file(tmp_path, f"- id: a\n  order: 1\n  when: {when}\n  then: {{team: handling}}\n")
    (problem,) = problems_of(path)
    line = line_of(path, "when:")
    column = path.read_text().splitlines()[line - 1].index(needle) + 1  # `needle` starts the wrong node
    assert problem.startswith(f"{path}:{line}:{column}: {key}: {message}")


def test_fault_rules_and_problem_rules_never_shadow_each_other(tmp_path: Path) -> None:
    """A catch-all for problems does not hide a later `fault` rule; a broader `fault` rule hides a narrower one."""
    path = rules_file(tmp_path, """\
        - id: every-problem
          order: 1
          then: {team: handling}
        - id: any-fault
          order: 2
          when: {fault: any}
          then: {team: handling, priority: 3}
        - id: stuck-smoke
          order: 3
          when: {fault: stuck, sensor_type: smoke}
          then: {team: supervision}
        - id: smoke
          order: 4
          when: {sensor_type: smoke}
          then: {team: supervision}
        """)
    warned = [w.split(": ")[1] for w in load_ruleset(path).warnings]
    assert warned == ["rules[stuck-smoke]", "rules[smoke]"]
    assert "taken first by rule 'any-fault'" in load_ruleset(path).warnings[0]


# --- time_limits --------------------------------------------------------------------------------------------

def limits_file(tmp: Path, block: str) -> Path:
    """A ruleset using priorities 1 (a rule), 2 (a disabled rule) and 3 (the default) with `block` at the end."""
    return rules_file(tmp, """\
        - {id: urgent, order: 1, when: {category: E04*}, then: {team: handling, priority: 1}}
        - {id: resting, order: 2, enabled: false, then: {team: handling, priority: 2}}
        """, default="default: {team: handling}\n" + textwrap.dedent(block))


@pytest.mark.parametrize(("block", "needle", "key", "message"), [
    ("time_limits: {dispatch: 30m, acept: {1: 15m}}", "acept", "time_limits.acept",
     "unknown key; did you mean 'accept'?"),
    ("time_limits: {dispatch: 30 minutes}", "30 minutes", "time_limits.dispatch", "bad duration '30 minutes'"),
    ("time_limits: {dispatch: 0m}", "0m", "time_limits.dispatch", "bad duration '0m': must be longer than zero"),
    ("time_limits: {accept: {1: 15m, 3: -2h}}", "-2h", "time_limits.accept.3", "bad duration '-2h'"),
    ("time_limits: {verify: {1: 2h, 3: 0s}}", "0s", "time_limits.verify.3", "bad duration '0s': must be longer "
     "than zero"),
    ("time_limits: {accept: {1: 15m, 4: 4h}}", "4:", "time_limits.accept.4",
     "no route of this file has priority 4 (used: 1, 2, 3)"),
    ("time_limits: {verify: {0: 1h}}", "0:", "time_limits.verify.0", "0 is out of range 1..5"),
    ("time_limits: {verify: {9: 1h}}", "9:", "time_limits.verify.9", "9 is out of range 1..5"),
    ("time_limits: {accept: {high: 1h}}", "high", "time_limits.accept.high", "expected a whole number, got 'high'"),
    ("time_limits: {accept: {1: 15m, 01: 10m}}", "01", "time_limits.accept.01", "priority 1 is given twice"),
    ("time_limits: {accept: 15m}", "15m", "time_limits.accept", "expected a mapping, got '15m'"),
    ("time_limits: {accept: {}}", "{}", "time_limits.accept", "give a limit for at least one priority"),
    ("time_limits: {}", "{}", "time_limits", "empty: leave `time_limits` out for the shipped defaults"),
    ("time_limits: 30m", "30m", "time_limits", "expected a mapping, got '30m'"),
])
def test_bad_time_limits_name_line_and_key(tmp_path: Path, block: str, needle: str, key: str, message: str) -> None:
    """Unknown keys, bad or non-positive durations and priorities no route uses are refused at line and key."""
    path = limits_file(tmp_path, block + "\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'time_limits')}:{col_of(path, needle)}: {key}: {message}")


def test_time_limits_problems_come_with_the_others(tmp_path: Path) -> None:
    """A bad time limit and a bad rule are reported together, each at its own line."""
    path = limits_file(tmp_path, """\
        time_limits:
          dispatch: soon
          verify:
            1: 2h
            9: 1h
        """)
    path.write_text(path.read_text().replace("priority: 1}", "priority: 7}"), encoding="utf-8")
    problems = problems_of(path)
    assert [p.split(": ")[0].split(":")[-2] for p in problems] == [
        str(line_of(path, "priority: 7")), str(line_of(path, "soon")), str(line_of(path, "9: 1h"))]
    assert [p.split(": ")[1] for p in problems] == ["rules[urgent].then.priority", "time_limits.dispatch",
                                                    "time_limits.verify.9"]
