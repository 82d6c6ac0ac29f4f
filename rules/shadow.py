"""Warnings for rules that can never win because an earlier rule takes every event they would match.

The check is sound but not complete: a warning is only given when it is certain (each condition of the earlier
rule is implied by some condition of the later one); a shadowed rule whose proof needs reasoning across
conditions may go unreported. Implication per leaf: value sets included, code prefixes covered, time windows
and weekdays included, other conditions identical.
"""

from __future__ import annotations

from pipeline.model.taxonomy import Taxonomy
from rules.combinators import All, AnyOf
from rules.conditions import CodeMatch, Condition, Located, Membership, TimeOfDay, Weekday
from rules.spec import Rule, RulesetSpec


def shadow_warnings(spec: RulesetSpec, taxonomy: Taxonomy) -> list[str]:
    """One `file:line:1: rules[id]: ...` warning per rule that an earlier rule fully covers."""
    warnings: list[str] = []
    for i, later in enumerate(spec.rules):
        for earlier in spec.rules[:i]:
            # a rule for problems never takes a device fault from a `fault` rule, nor the other way round
            if earlier.for_faults is later.for_faults and covers(earlier.when, later.when, taxonomy):
                warnings.append(_warning(spec.path, later, earlier))
                break
    return warnings


def _warning(path: str, later: Rule, earlier: Rule) -> str:
    return (
        f"{path}:{later.line}:1: rules[{later.id}]: unreachable: every event it matches is taken first by "
        f"rule {earlier.id!r} (order {earlier.order}, line {earlier.line})"
    )


def covers(earlier: All, later: All, taxonomy: Taxonomy) -> bool:
    """True when every event satisfying `later` also satisfies `earlier`."""
    return all(
        any(implies(d, c, taxonomy) for d in later.children) or _implied_by_all(c, later, taxonomy)
        for c in earlier.children
    )


def _implied_by_all(c: Condition, later: All, taxonomy: Taxonomy) -> bool:
    if isinstance(c, All):
        return covers(c, later, taxonomy)
    if isinstance(c, AnyOf):
        return any(
            _implied_by_all(child, later, taxonomy)
            or any(implies(d, child, taxonomy) for d in later.children)
            for child in c.children
        )
    return False


def implies(d: Condition, c: Condition, taxonomy: Taxonomy) -> bool:
    """Whether condition `d` holding guarantees condition `c` holds."""
    if isinstance(d, All):
        return any(implies(x, c, taxonomy) for x in d.children)
    if isinstance(c, Membership) and isinstance(d, Membership):
        return (c.attr, c.on_location) == (d.attr, d.on_location) and d.values <= c.values
    if isinstance(c, CodeMatch) and isinstance(d, CodeMatch):
        if (c.attr, c.on_location) != (d.attr, d.on_location):
            return False
        if c.attr == "category":
            codes = [code for code in taxonomy.codes() if d.matches(code)]
            return all(c.matches(code) for code in codes)
        return all(c.matches(code) for code in d.exact) and all(
            any(p.startswith(q) for q in c.prefixes) for p in d.prefixes
        )
    if isinstance(c, Located) and isinstance(d, Located):
        return c.expected == d.expected
    if isinstance(c, TimeOfDay) and isinstance(d, TimeOfDay):
        return c.tz == d.tz and _minutes(d) <= _minutes(c)
    if isinstance(c, Weekday) and isinstance(d, Weekday):
        return c.tz == d.tz and d.days <= c.days
    if isinstance(c, AnyOf):
        return any(implies(d, child, taxonomy) for child in c.children)
    return type(c) is type(d) and c.describe() == d.describe()


def _minutes(t: TimeOfDay) -> set[int]:
    out: set[int] = set()
    for start, end in t.windows:
        out |= set(range(start, end)) if start < end else set(range(start, 1440)) | set(range(0, end))
    return out
