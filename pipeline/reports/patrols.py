"""Patrol assignments (责任网格, pipeline/data/patrols.yaml): the grids each patrol team walks and the categories
patrols cover, for the evaluation's 漏报率. Validated like the rules: every problem of the file is collected as
`file:line:column: key: what is wrong`, then `PatrolsError` is raised with all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.model.taxonomy import default_taxonomy
from rules.errors import format_problem

PATROLS_FILE = Path(__file__).resolve().parents[1] / "data" / "patrols.yaml"
_KEYS = ("grids", "subdistricts", "categories")


class PatrolsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Patrol:
    """One patrol team's area (whole sub-districts and single management grids) and categories (codes or
    prefixes)."""

    team: str
    subdistricts: tuple[str, ...]
    grids: tuple[str, ...]
    categories: tuple[str, ...]


def _codes(node: Node, key: str, pattern: str, what: str, problems: list[str], path: str) -> tuple[str, ...]:
    if not isinstance(node, SequenceNode) or not node.value:
        problems.append(format_problem(path, node.start_mark, key, "expected a non-empty list"))
        return ()
    out = []
    for item in node.value:
        text = str(item.value) if isinstance(item, ScalarNode) else ""
        if not re.fullmatch(pattern, text):
            problems.append(format_problem(path, item.start_mark, key, f"{text or type(item).__name__!r} is not "
                                           f"{what}"))
        else:
            out.append(text)
    return tuple(out)


def load_patrols(path: Path = PATROLS_FILE, text: str | None = None) -> list[Patrol]:
    name = str(path)
    try:
        root = yaml.compose(text if text is not None else path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PatrolsError([f"{name}: cannot read: {err.strerror or err}"]) from err
    except yaml.YAMLError as err:
        raise PatrolsError([format_problem(name, getattr(err, "problem_mark", None), "", "not YAML")]) from err
    problems: list[str] = []
    if not isinstance(root, MappingNode) or [str(k.value) for k, _ in root.value] != ["patrols"] \
            or not isinstance(root.value[0][1], MappingNode):
        raise PatrolsError([format_problem(name, root.start_mark if root else None, "",
                                           "expected one key, patrols: a mapping of team -> its area")])
    codes = set(default_taxonomy().codes())
    out: list[Patrol] = []
    for knode, body in root.value[0][1].value:
        team = str(knode.value)
        key = f"patrols.{team}"
        if not isinstance(body, MappingNode):
            problems.append(format_problem(name, body.start_mark, key, "expected a mapping"))
            continue
        fields = {str(k.value): (k, v) for k, v in body.value}
        for f, (k, _) in fields.items():
            if f not in _KEYS:
                problems.append(format_problem(name, k.start_mark, f"{key}.{f}",
                                               f"unknown key; choose among {', '.join(_KEYS)}"))
        if "categories" not in fields or not ({"grids", "subdistricts"} & set(fields)):
            problems.append(format_problem(name, body.start_mark, key, "needs categories and grids or subdistricts"))
            continue
        subs = _codes(fields["subdistricts"][1], f"{key}.subdistricts", r"\d{9}", "a 9-digit sub-district code",
                      problems, name) if "subdistricts" in fields else ()
        grids = _codes(fields["grids"][1], f"{key}.grids", r"\d{12}", "a 12-digit grid code", problems,
                       name) if "grids" in fields else ()
        cats = _codes(fields["categories"][1], f"{key}.categories", r"[EP]\d{2,4}", "a category code or prefix",
                      problems, name)
        for c, item in zip(cats, fields["categories"][1].value, strict=False):
            if not any(code.startswith(c) for code in codes):
                problems.append(format_problem(name, item.start_mark, f"{key}.categories",
                                               f"{c} names no category of the taxonomy"))
        out.append(Patrol(team, subs, grids, cats))
    if problems:
        raise PatrolsError(problems)
    return out


def patrols_yaml(teams: list[tuple[str, str]], categories: list[str]) -> str:
    """An assignment file: (team, sub-district) pairs, each team walking its whole sub-district."""
    lines = ["# Patrol assignments written by the simulator (pipeline/reports/patrols.py reads them).", "patrols:"]
    for team, sub in teams:
        lines += [f"  {team}:", f"    subdistricts: [{sub}]", f"    categories: [{', '.join(categories)}]"]
    return "\n".join(lines) + "\n"
