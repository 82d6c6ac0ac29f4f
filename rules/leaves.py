"""The leaf keys of a rule's `when` block (rules.when lists them and what each accepts): one parser per key,
each turning its value into a condition (rules.conditions) or recording its problems and answering None."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from yaml.nodes import Node

from pipeline.model.events import DEVICE_FAULTS
from pipeline.model.sources import DISCOVERED_BY, SOURCES
from pipeline.model.taxonomy import Taxonomy
from rules.conditions import (
    WEEKDAYS,
    CodeMatch,
    Condition,
    Located,
    Membership,
    Recurrence,
    TextSearch,
    TimeOfDay,
    ValueCompare,
    Weekday,
)
from rules.durations import parse_duration
from rules.nodes import NodeReader

REQUEST_TYPES = ("consult", "help", "complaint", "report", "suggestion")
GRID_KINDS = ("street", "residential", "village", "building")
_SOURCE_OF: dict[str, str] = {by: source for source, by in DISCOVERED_BY.items()}
_CATEGORY_CODE = re.compile(r"^[PE]\d{4}$")
_CATEGORY_PREFIX = re.compile(r"^[PE]\d{0,3}\*$")
_SUBDISTRICT = re.compile(r"^\d{9}$")
_CELL = re.compile(r"^[0-9A-Za-z_.-]+\*?$")
_SENSOR_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_COMPARISON = re.compile(r"^(>=|<=|==|!=|>|<)?\s*(-?\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class WhenContext:
    """What parsing needs besides the node: the taxonomy to check codes against and the local time zone."""

    taxonomy: Taxonomy
    tz: ZoneInfo


def leaf_keys() -> tuple[str, ...]:
    return tuple(LEAVES)


def _membership(
    key: str,
    choices: tuple[str, ...],
    attr: str | None = None,
    on_location: bool = False,
) -> Callable[[NodeReader, Node, str, WhenContext], Condition | None]:
    def parse(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
        values = reader.texts(node, where)
        if values is None:
            return None
        bad = [(n, v) for n, v in values if v not in choices]
        for n, v in bad:
            reader.problem(n, where, f"unknown {key} {v!r}; expected one of {', '.join(choices)}")
        if bad:
            return None
        shown = tuple(dict.fromkeys(v for _, v in values))
        return Membership(key, attr or key, frozenset(shown), shown, on_location)

    return parse


def _discovered_by(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    parsed = _membership("discovered_by", tuple(_SOURCE_OF))(reader, node, where, ctx)
    if not isinstance(parsed, Membership):
        return None
    # discovered_by is a function of source: match on source so the index can use it
    return Membership("discovered_by", "source", frozenset(_SOURCE_OF[v] for v in parsed.shown), parsed.shown)


def _category(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    exact: set[str] = set()
    prefixes: list[str] = []
    ok = True
    codes = ctx.taxonomy.codes()
    for n, v in values:
        if _CATEGORY_PREFIX.match(v):
            if not any(c.startswith(v[:-1]) for c in codes):
                reader.problem(n, where, f"category prefix {v!r} matches no code of the taxonomy")
                ok = False
            prefixes.append(v[:-1])
        elif _CATEGORY_CODE.match(v):
            if v not in ctx.taxonomy:
                near = [c for c in codes if c[:3] == v[:3]][:6]
                hint = f" (known in {v[:3]}: {', '.join(near)}...)" if near else ""
                reader.problem(n, where, f"unknown category code {v!r}{hint}")
                ok = False
            exact.add(v)
        else:
            reader.problem(n, where, f"bad category {v!r}: expected a code like E0501 or a prefix like E05*")
            ok = False
    if not ok:
        return None
    return CodeMatch("category", "category", frozenset(exact), tuple(prefixes), tuple(v for _, v in values))


def _subdistrict(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    bad = [(n, v) for n, v in values if not _SUBDISTRICT.match(v)]
    for n, v in bad:
        reader.problem(n, where, f"bad sub-district code {v!r}: expected 9 digits such as 310109009")
    if bad:
        return None
    shown = tuple(dict.fromkeys(v for _, v in values))
    return Membership("subdistrict", "subdistrict", frozenset(shown), shown, on_location=True)


def _cell(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    bad = [(n, v) for n, v in values if not _CELL.match(v)]
    for n, v in bad:
        reader.problem(n, where, f"bad cell code {v!r}: letters, digits, `_.-`, optionally ending in *")
    if bad:
        return None
    exact = frozenset(v for _, v in values if not v.endswith("*"))
    prefixes = tuple(v[:-1] for _, v in values if v.endswith("*"))
    return CodeMatch("cell", "cell", exact, prefixes, tuple(v for _, v in values), on_location=True)


def _located(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    value = reader.boolean(node, where)
    return None if value is None else Located(value)


def _time(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    windows: list[tuple[int, int]] = []
    for n, v in values:
        m = _WINDOW.match(v)
        if not m:
            reader.problem(n, where, f"bad time window {v!r}: expected HH:MM-HH:MM such as 22:00-06:00")
            continue
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            reader.problem(n, where, f"bad time window {v!r}: not a time of day")
            continue
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end % 1440:
            reader.problem(n, where, f"bad time window {v!r}: start equals end; leave `time` out for all day")
            continue
        windows.append((start, end))
    if len(windows) != len(values):
        return None
    return TimeOfDay(tuple(windows), tuple(v for _, v in values), ctx.tz)


def _weekday(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    days: set[int] = set()
    ok = True
    for n, raw in values:
        v = raw.lower()
        if v == "weekend":
            days |= {5, 6}
        elif v in ("workday", "weekdays"):
            days |= {0, 1, 2, 3, 4}
        elif v in WEEKDAYS:
            days.add(WEEKDAYS.index(v))
        elif "-" in v and all(p.strip() in WEEKDAYS for p in v.split("-", 1)):
            a, b = (WEEKDAYS.index(p.strip()) for p in v.split("-", 1))
            days |= {d % 7 for d in range(a, a + (b - a) % 7 + 1)}
        else:
            reader.problem(
                n, where, f"bad weekday {raw!r}: expected mon..sun, a range like mon-fri, weekend or workday"
            )
            ok = False
    return Weekday(frozenset(days), ctx.tz) if ok else None


def _keywords(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    words = tuple(dict.fromkeys(v for _, v in values))
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    return TextSearch("keywords", pattern, words)


def _regex(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    value = reader.text(node, where)
    if value is None:
        return None
    try:
        pattern = re.compile(value, re.IGNORECASE)
    except re.error as err:
        reader.problem(node, where, f"bad regular expression {value!r}: {err.msg} at position {err.pos}")
        return None
    return TextSearch("regex", pattern, (value,))


def _sensor_type(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    bad = [(n, v) for n, v in values if not _SENSOR_TYPE.match(v)]
    for n, v in bad:
        reader.problem(n, where, f"bad sensor type {v!r}: lower-case letters, digits and _ (manhole_tilt)")
    if bad:
        return None
    shown = tuple(dict.fromkeys(v for _, v in values))
    return Membership("sensor_type", "sensor_type", frozenset(shown), shown)


def _fault(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    values = reader.texts(node, where)
    if values is None:
        return None
    choices = (*DEVICE_FAULTS, "any")
    bad = [(n, v) for n, v in values if v not in choices]
    for n, v in bad:
        hint = difflib.get_close_matches(v, choices, n=1)
        reader.problem(
            n,
            where,
            f"unknown fault {v!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (faults: {', '.join(DEVICE_FAULTS)}, or any)",
        )
    if bad:
        return None
    shown = tuple(dict.fromkeys(v for _, v in values))
    if "any" in shown and len(shown) > 1:
        reader.problem(node, where, "`any` already means every fault: write `fault: any` alone")
        return None
    faults = frozenset(DEVICE_FAULTS) if shown == ("any",) else frozenset(shown)
    return Membership("fault", "fault", faults, shown)


def parse_comparison(reader: NodeReader, node: Node, where: str, default_op: str) -> tuple[str, float] | None:
    """`">= 30"`-style text (or a bare number, meaning `default_op`) as (operator, number)."""
    value = reader.text(node, where)
    if value is None:
        return None
    m = _COMPARISON.match(value)
    if not m:
        reader.problem(
            node,
            where,
            f"bad comparison {value!r}: expected an operator (>=, >, <=, <, ==, !=) "
            'and a number, e.g. ">= 30"',
        )
        return None
    return (m.group(1) or default_op, float(m.group(2)))


def _value(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    items = reader.items(node, where)
    if items is None:
        return None
    comparisons = [parse_comparison(reader, n, k, "==") for n, k in items]
    if any(c is None for c in comparisons):
        return None
    return ValueCompare(tuple(c for c in comparisons if c is not None))


def _recurrence(reader: NodeReader, node: Node, where: str, ctx: WhenContext) -> Condition | None:
    entries = reader.mapping(
        node, where, allowed=("category", "within", "count"), required=("within", "count")
    )
    if entries is None or "within" not in entries or "count" not in entries:
        return None
    category = "same"
    if "category" in entries:
        n = entries["category"].value
        text = reader.text(n, f"{where}.category")
        if text is None:
            return None
        if text not in ("same", "same-class"):
            parsed = _category(reader, n, f"{where}.category", ctx)
            if parsed is None:
                return None
        category = text
    within_text = reader.text(entries["within"].value, f"{where}.within")
    window = None
    if within_text is not None:
        try:
            window = parse_duration(within_text)
        except ValueError as err:
            reader.problem(entries["within"].value, f"{where}.within", str(err))
    count = parse_comparison(reader, entries["count"].value, f"{where}.count", ">=")
    if count is not None and (count[1] < 0 or count[1] != int(count[1])):
        reader.problem(
            entries["count"].value, f"{where}.count", "count must compare with a whole number >= 0"
        )
        count = None
    if window is None or count is None:
        return None
    return Recurrence(category, window, count[0], int(count[1]))


LEAVES: dict[str, Callable[[NodeReader, Node, str, WhenContext], Condition | None]] = {
    "source": _membership("source", SOURCES),
    "discovered_by": _discovered_by,
    "category": _category,
    "subdistrict": _subdistrict,
    "grid_kind": _membership("grid_kind", GRID_KINDS, on_location=True),
    "cell": _cell,
    "located": _located,
    "time": _time,
    "weekday": _weekday,
    "request_type": _membership("request_type", REQUEST_TYPES),
    "keywords": _keywords,
    "regex": _regex,
    "sensor_type": _sensor_type,
    "value": _value,
    "recurrence": _recurrence,
    "fault": _fault,
}
