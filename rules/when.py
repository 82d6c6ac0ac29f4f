"""Parsing a rule's `when` block into a condition tree, naming every mistake with its line and key.

A mapping is the conjunction of its keys; `all` / `any` take lists of such mappings and `not` takes one.
Leaf keys and what they accept:

| key | value |
| --- | --- |
| source | hotline, patrol, iot (one or a list) |
| discovered_by | citizen, patrol, sensor |
| category | codes from the taxonomy (`E0501`) or prefixes (`E05*`, `P*`) |
| subdistrict | 9-digit sub-district codes (`310109009`) |
| grid_kind | street, residential, village, building |
| cell | cell codes or prefixes (`310109009001*`) |
| located | true / false: whether the grid put the event in a cell |
| time | local windows `HH:MM-HH:MM` (end exclusive; `22:00-06:00` wraps midnight) |
| weekday | mon..sun, ranges `mon-fri`, `weekend`, `workday` |
| request_type | consult, help, complaint, report, suggestion |
| keywords | words of which the description contains at least one (case-insensitive) |
| regex | a Python regular expression searched in the description |
| sensor_type | sensor type names (`manhole_tilt`) |
| value | comparisons on the reading, all must hold: `">= 30"` or `[">= 20", "< 40"]` |
| recurrence | `{category: same / same-class / code / prefix, within: 30d, count: ">= 3"}` |
| fault | stuck, silent, error (one or a list), or `any`; only at the top of a rule's `when` |

`fault` divides the rules in two: a rule whose `when` names it routes device-fault reports (docs/cases.md §6.3)
and only those; a rule that does not name it routes problems and never a device fault (rules/spec.py, `Rule`).
So that a reader sees at once which kind a rule is for, `fault` cannot be nested in `all`, `any` or `not`.

This module parses the tree (mappings, all / any / not); each leaf key's parser is in rules.leaves.
"""

from __future__ import annotations

from yaml.nodes import Node

from rules.combinators import All, AnyOf, Not
from rules.conditions import (
    Condition,
)
from rules.leaves import LEAVES, WhenContext
from rules.nodes import NodeReader

_COMBINATORS = ("all", "any", "not")


def parse_when(
    reader: NodeReader, node: Node, key: str, ctx: WhenContext, rule_level: bool = False
) -> Condition | None:
    """A `when` mapping as one condition (an `All` of its keys); None after recording problems. `rule_level`:
    the mapping is a rule's own `when` (the one place `fault` may be), not one nested in all / any / not."""
    entries = reader.mapping(node, key, allowed=(*_COMBINATORS, *LEAVES))
    if entries is None:
        return None
    children: list[Condition] = []
    ok = True
    for name, entry in entries.items():
        where = f"{key}.{name}"
        parsed: Condition | None
        if name == "fault" and not rule_level:
            reader.problem(
                entry.key_node,
                where,
                "`fault` goes at the top of a rule's `when`, not inside all / any / not: it makes the whole "
                "rule one for device faults",
            )
            parsed = None
        elif name in ("all", "any"):
            parts = _parse_list(reader, entry.value, where, ctx)
            parsed = None if parts is None else (All(tuple(parts)) if name == "all" else AnyOf(tuple(parts)))
        elif name == "not":
            inner = parse_when(reader, entry.value, where, ctx)
            parsed = None if inner is None else Not(inner)
        else:
            parsed = LEAVES[name](reader, entry.value, where, ctx)
        if parsed is None:
            ok = False
        else:
            children.append(parsed)
    if not ok:
        return None
    if not children:
        if not entries and not getattr(node, "value", None):  # unknown keys were reported already
            reader.problem(node, key, "empty condition: leave `when` out to match every event")
        return None
    return All(tuple(children))


def _parse_list(reader: NodeReader, node: Node, key: str, ctx: WhenContext) -> list[Condition] | None:
    items = reader.items(node, key, allow_scalar=False)
    if items is None:
        return None
    parts = [parse_when(reader, item, item_key, ctx) for item, item_key in items]
    return None if any(p is None for p in parts) else [p for p in parts if p is not None]
