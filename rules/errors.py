"""The one error a bad rules file raises, and how its problems are worded.

Every problem is one line, `file:line:column: key: what is wrong`, with 1-based line and column pointing at
the YAML node that is wrong, and `key` the dotted path to it (`rules[noise].then.sla`). A loader collects
every problem of a file before raising, so one run of `cityops rules check` shows them all.
"""

from __future__ import annotations

from yaml import Mark


class RulesError(Exception):
    """A rules (or rule-tests) file that cannot be used; `problems` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def format_problem(file: str, mark: Mark | None, key: str, message: str) -> str:
    """One problem line; a missing mark (e.g. an empty file) points at line 1, column 1."""
    line = mark.line + 1 if mark is not None else 1
    column = mark.column + 1 if mark is not None else 1
    return f"{file}:{line}:{column}: {key or '(top)'}: {message}"
