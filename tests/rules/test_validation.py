"""Each kind of invalid rules file is refused with `file:line:column: key: what is wrong`."""

from __future__ import annotations

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
