"""The inner nodes of a rule's `when` tree: `all`, `any` and `not` over conditions (rules.conditions), each
evaluated, compiled, described and traced like a leaf; compiled `all`/`any` test their cheap children first."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.model.events import Event
from rules.conditions import COST_CHEAP, Condition, Consts, Membership
from rules.recurrence import RecurrenceCounter


@dataclass(frozen=True, eq=False)
class All(Condition):
    """Every child holds (an empty `all` always holds: a rule without `when` matches everything)."""

    children: tuple[Condition, ...] = field(default_factory=tuple)

    def cost(self) -> int:
        return max((c.cost() for c in self.children), default=COST_CHEAP)

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return all(c.test(ev, rec) for c in self.children)

    def code(self, consts: Consts) -> str:
        if not self.children:
            return "True"
        ordered = sorted(self.children, key=lambda c: c.cost())
        return "(" + " and ".join(c.code(consts) for c in ordered) + ")"

    def describe(self) -> str:
        if not self.children:
            return "always"
        return " and ".join(_wrap(c) for c in self.children)

    def why(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        if not self.children:
            return "always"
        return " and ".join(_wrap_text(c, c.why(ev, rec)) for c in self.children)

    def has_choice(self) -> bool:
        return any(c.has_choice() for c in self.children)

    def trace(self, ev: Event, rec: RecurrenceCounter | None, depth: int = 0) -> tuple[bool, list[str]]:
        if not self.children:
            return True, [f"{'  ' * depth}[x] always"]
        if len(self.children) == 1:
            return self.children[0].trace(ev, rec, depth)
        nested = depth > 0  # the top level is the rule itself
        lines: list[str] = []
        ok = True
        for child in self.children:
            child_ok, child_lines = child.trace(ev, rec, depth + 1 if nested else depth)
            ok = ok and child_ok
            lines += child_lines
        if nested:
            lines.insert(0, f"{'  ' * depth}[{'x' if ok else ' '}] all of:")
        return ok, lines


@dataclass(frozen=True, eq=False)
class AnyOf(Condition):
    """At least one child holds."""

    children: tuple[Condition, ...]

    def cost(self) -> int:
        return max(c.cost() for c in self.children)

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return any(c.test(ev, rec) for c in self.children)

    def code(self, consts: Consts) -> str:
        ordered = sorted(self.children, key=lambda c: c.cost())
        return "(" + " or ".join(c.code(consts) for c in ordered) + ")"

    def describe(self) -> str:
        return "any of (" + "; ".join(c.describe() for c in self.children) + ")"

    def why(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        for child in self.children:
            if child.test(ev, rec):
                return child.why(ev, rec)
        return self.describe()

    def has_choice(self) -> bool:
        return True

    def trace(self, ev: Event, rec: RecurrenceCounter | None, depth: int = 0) -> tuple[bool, list[str]]:
        lines = [f"{'  ' * depth}any of:"]
        ok = False
        for child in self.children:
            child_ok, child_lines = child.trace(ev, rec, depth + 1)
            ok = ok or child_ok
            lines += child_lines
        lines[0] = f"{'  ' * depth}[{'x' if ok else ' '}] any of:"
        return ok, lines


@dataclass(frozen=True, eq=False)
class Not(Condition):
    """The child does not hold."""

    child: Condition

    def cost(self) -> int:
        return self.child.cost()

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return not self.child.test(ev, rec)

    def code(self, consts: Consts) -> str:
        return f"(not {self.child.code(consts)})"

    def describe(self) -> str:
        return f"not ({self.child.describe()})"

    def trace(self, ev: Event, rec: RecurrenceCounter | None, depth: int = 0) -> tuple[bool, list[str]]:
        child_ok, child_lines = self.child.trace(ev, rec, depth + 1)
        return not child_ok, [f"{'  ' * depth}[{' ' if child_ok else 'x'}] not:"] + child_lines


def names_fault(when: All) -> bool:
    """Whether a rule's `when` has a `fault` condition (which rules/when.py allows only at its top level): such
    a rule routes device-fault reports and no other rule ever does (docs/cases.md §6.3)."""
    return any(isinstance(c, Membership) and c.attr == "fault" for c in when.children)


def _wrap(c: Condition) -> str:
    return _wrap_text(c, c.describe())


def _wrap_text(c: Condition, text: str) -> str:
    return f"({text})" if isinstance(c, All) and len(c.children) > 1 else text
