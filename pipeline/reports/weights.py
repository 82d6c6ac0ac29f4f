"""The evaluation's weights and grade bands (pipeline/data/evaluation_weights.yaml), validated like the rules:
every problem of the file is collected and reported as `file:line:column: key: what is wrong` (an unknown key,
a missing one, a weight that is not a number in 0..1, weights of one evaluation that do not add up to 1, grade
bands out of order), then `WeightsError` is raised with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from rules.errors import format_problem

WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "data" / "evaluation_weights.yaml"

# The indicators each evaluation may weigh (the ids of pipeline/reports/evaluation.py's INDICATORS).
WEIGHABLE: dict[str, tuple[str, ...]] = {
    "region": ("public_report_rate", "filed", "close_rate", "closed_on_time_rate", "rework_rate",
               "discovery_rate"),
    "department": ("dispatched", "resolve_rate", "resolved_on_time_rate", "rework_rate"),
    "position.verifier": ("verified_on_time_rate", "verify_rate"),
    "position.patrol": ("miss_rate",),
    "position.inspector": ("valid_rate",),
    "position.checker": ("check_in_time_rate",),
}
GRADES = ("A", "B", "C", "D")
TOLERANCE = 1e-6


class WeightsError(Exception):
    """A weights file that cannot be used; `problems` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Weights:
    """Per evaluation (`region`, `department`, `position.verifier`): indicator id -> weight (adding up to 1);
    `grades`: the lowest score of A, B, C and D (below D: E)."""

    evaluations: dict[str, dict[str, float]]
    grades: dict[str, float]
    source: str

    def of(self, evaluation: str) -> dict[str, float]:
        return self.evaluations[evaluation]

    def grade(self, score: float | None) -> str | None:
        if score is None:
            return None
        for g in GRADES:
            if score >= self.grades[g]:
                return g
        return "E"


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def problem(self, node: Node | None, key: str, message: str) -> None:
        self.problems.append(format_problem(self.path, node.start_mark if node is not None else None, key, message))

    def mapping(self, node: Node | None, key: str) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.problem(node, key, "expected a mapping")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            name = str(k.value) if isinstance(k, ScalarNode) else "?"
            if name in out:
                self.problem(k, f"{key}.{name}" if key else name, "duplicate key")
            out[name] = (k, v)
        return out

    def number(self, node: Node, key: str, low: float, high: float) -> float | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        try:
            value = float(text)
        except ValueError:
            self.problem(node, key, f"expected a number, got {text or 'a ' + type(node).__name__}")
            return None
        if not low <= value <= high:
            self.problem(node, key, f"{text} is outside {low:g}..{high:g}")
            return None
        return value

    def weights(self, node: Node, key: str, allowed: tuple[str, ...]) -> dict[str, float] | None:
        entries = self.mapping(node, key)
        if entries is None:
            return None
        out: dict[str, float] = {}
        ok = True
        for name, (knode, vnode) in entries.items():
            if name not in allowed:
                self.problem(knode, f"{key}.{name}", f"unknown indicator; choose among {', '.join(allowed)}")
                ok = False
                continue
            w = self.number(vnode, f"{key}.{name}", 0.0, 1.0)
            if w is None:
                ok = False
            else:
                out[name] = w
        if not entries:
            self.problem(node, key, "no weights")
            return None
        if ok and abs(sum(out.values()) - 1.0) > TOLERANCE:
            self.problem(node, key, f"weights add up to {sum(out.values()):g}, not 1")
            return None
        return out if ok else None


def load_weights(path: Path = WEIGHTS_FILE, text: str | None = None) -> Weights:
    """The weights file, or `WeightsError` with every problem in it."""
    name = str(path)
    r = _Reader(name)
    try:
        root = yaml.compose(text if text is not None else path.read_text(encoding="utf-8"))
    except OSError as err:
        raise WeightsError([f"{name}: cannot read: {err.strerror or err}"]) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise WeightsError([format_problem(name, mark, "", f"not YAML: {getattr(err, 'problem', err)}")]) from err
    top = r.mapping(root, "")
    if top is None:
        raise WeightsError(r.problems)
    evaluations: dict[str, dict[str, float]] = {}
    grades: dict[str, float] = {}
    known = ("grades", "region", "department", "position")
    for name_, (knode, _) in top.items():
        if name_ not in known:
            r.problem(knode, name_, f"unknown key; choose among {', '.join(known)}")
    for name_ in known:
        if name_ not in top:
            r.problem(root, name_, "missing")
    if "grades" in top:
        bands = r.mapping(top["grades"][1], "grades")
        if bands is not None:
            for g, (knode, vnode) in bands.items():
                if g not in GRADES:
                    r.problem(knode, f"grades.{g}", f"unknown grade; give the lowest score of {', '.join(GRADES)}"
                              " (below D is E)")
                    continue
                v = r.number(vnode, f"grades.{g}", 0.0, 100.0)
                if v is not None:
                    grades[g] = v
            for g in GRADES:
                if g not in bands:
                    r.problem(top["grades"][1], f"grades.{g}", "missing")
            values = [grades[g] for g in GRADES if g in grades]
            if len(values) == len(GRADES) and any(a <= b for a, b in zip(values, values[1:], strict=False)):
                r.problem(top["grades"][1], "grades", "each grade's lowest score must be above the next one's")
    for name_ in ("region", "department"):
        if name_ in top:
            got = r.weights(top[name_][1], name_, WEIGHABLE[name_])
            if got is not None:
                evaluations[name_] = got
    if "position" in top:
        positions = r.mapping(top["position"][1], "position")
        if positions is not None:
            for pos, (knode, vnode) in positions.items():
                key = f"position.{pos}"
                if key not in WEIGHABLE:
                    r.problem(knode, key, "unknown position; choose among verifier, patrol, inspector, checker")
                    continue
                got = r.weights(vnode, key, WEIGHABLE[key])
                if got is not None:
                    evaluations[key] = got
            if "verifier" not in positions:
                r.problem(top["position"][1], "position.verifier", "missing")
    if r.problems:
        raise WeightsError(r.problems)
    return Weights(evaluations, grades, name)
