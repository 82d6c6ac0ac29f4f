"""The `when` conditions of a rule as a small typed tree, and the three things each node can do (this module
holds the node type and the leaves; the inner nodes `all`, `any` and `not` are rules.combinators).

- `test(event, recurrence)`: evaluate directly (used by `explain` and for reasons of `any` rules);
- `code(consts)`: a Python expression over `ev` (the Event) and `rec` (the RecurrenceCounter or None) that the
  compiler joins into one function per rule; constants are passed by name through `consts`, never spliced into
  the source as text, so nothing from a rules file is ever executed;
- `describe()` / `observed(event)`: the readable condition and what the event had, for reasons and explain.

The compiled expression and `test` must agree on every event; tests/rules check that with generated events.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.model.events import Event
from rules.durations import format_duration
from rules.recurrence import RecurrenceCounter, RecurrenceHistory

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COMPARATORS: dict[str, Any] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
# Cost ranks: compiled `all`/`any` evaluate cheap children first (explain keeps the file's order).
COST_CHEAP, COST_TEXT, COST_CLOCK, COST_COUNT = 0, 1, 2, 3  # a regex search in C beats a zone conversion


class Consts:
    """Names for the constants a compiled expression refers to (`_k0`, `_k1`, ...), and the per-call locals
    the expressions share (the event's local time, converted at most once per call and only when needed)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self._local_times: dict[str, str] = {}  # zone key -> name of the local holding the converted time

    def add(self, value: object) -> str:
        name = f"_k{len(self.values)}"
        self.values[name] = value
        return name

    def local_time(self, tz: ZoneInfo) -> str:
        """An expression for `ev.occurred_at` in `tz` (naive = UTC) that converts on first use in a call and
        reuses the result afterwards; the function must start with `preamble()`."""
        var = self._local_times.get(tz.key)
        if var is None:
            var = self._local_times[tz.key] = f"_lt{len(self._local_times)}"
        zone, utc = self.add(tz), self.add(UTC)
        convert = (
            f"(_a.astimezone({zone}) if (_a := ev.occurred_at).tzinfo is not None "
            f"else _a.replace(tzinfo={utc}).astimezone({zone}))"
        )
        return f"({var} if {var} is not None else ({var} := {convert}))"

    def preamble(self) -> list[str]:
        """Statements to put at the top of a generated function using these expressions."""
        return [f"{var} = None" for var in self._local_times.values()]


def local_time(at: datetime, tz: ZoneInfo) -> datetime:
    """`at` in the ruleset's zone; a naive time is taken as UTC (the pipeline stores UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(tz)


def minute_of_day(at: datetime, tz: ZoneInfo) -> int:
    """Local minute of the day (0..1439) of `at` in `tz` (naive = UTC), for `test`; compiled code inlines it."""
    local = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(tz)
    return local.hour * 60 + local.minute


def minute_in_windows(at: datetime, tz: ZoneInfo, windows: tuple[tuple[int, int], ...]) -> bool:
    """Whether the local minute of day of `at` lies in one of the [start, end) windows (end < start wraps)."""
    minute = minute_of_day(at, tz)
    return any((start <= minute < end) if start < end else (minute >= start or minute < end) for start, end in windows)


class Condition(ABC):
    """A node of a `when` tree."""

    def cost(self) -> int:
        """Relative evaluation cost; `all` and `any` try cheaper children first in compiled code."""
        return COST_CHEAP

    @abstractmethod
    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool: ...

    @abstractmethod
    def code(self, consts: Consts) -> str: ...

    @abstractmethod
    def describe(self) -> str: ...

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        """What the event had for this condition (leaves only)."""
        return ""

    def why(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        """The part of this condition that made `ev` match (call only when `test` is true)."""
        return self.describe()

    def has_choice(self) -> bool:
        """True when `why` depends on the event (an `any` somewhere below)."""
        return False

    def trace(self, ev: Event, rec: RecurrenceCounter | None, depth: int = 0) -> tuple[bool, list[str]]:
        """Evaluate without short-circuit and return (result, indented lines `[x] condition (event: ...)`)."""
        ok = self.test(ev, rec)
        seen = self.observed(ev, rec)
        line = f"{'  ' * depth}[{'x' if ok else ' '}] {self.describe()}" + (f"   (event: {seen})" if seen else "")
        return ok, [line]


def _fmt(values: tuple[str, ...]) -> str:
    return values[0] if len(values) == 1 else "[" + ", ".join(values) + "]"


@dataclass(frozen=True, eq=False)
class Membership(Condition):
    """An event or location attribute equal to one of a set of values (source, request_type, ...)."""

    key: str  # the rules-file key, for messages
    attr: str  # attribute of Event, or of Location when on_location
    values: frozenset[str]
    shown: tuple[str, ...]  # the values as written (discovered_by shows citizen/patrol/sensor)
    on_location: bool = False

    def _get(self, ev: Event) -> str | None:
        if self.on_location:
            return None if ev.location is None else getattr(ev.location, self.attr)
        value: str | None = getattr(ev, self.attr)
        return value

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return self._get(ev) in self.values

    def code(self, consts: Consts) -> str:
        one = len(self.values) == 1
        test = f"== {consts.add(next(iter(self.values)))}" if one else f"in {consts.add(self.values)}"
        if self.on_location:
            return f"((_l := ev.location) is not None and _l.{self.attr} {test})"
        return f"(ev.{self.attr} {test})"

    def describe(self) -> str:
        return f"{self.key} {'is' if len(self.shown) == 1 else 'in'} {_fmt(self.shown)}"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        if self.key == "discovered_by":
            return f"discovered_by={ev.discovered_by}"
        return f"{self.attr}={self._get(ev)}"


@dataclass(frozen=True, eq=False)
class CodeMatch(Condition):
    """A category or cell code equal to one of `exact` or starting with one of `prefixes` (`E05*`)."""

    key: str
    attr: str
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    shown: tuple[str, ...]
    on_location: bool = False

    def _get(self, ev: Event) -> str | None:
        if self.on_location:
            return None if ev.location is None else getattr(ev.location, self.attr)
        value: str | None = getattr(ev, self.attr)
        return value

    def matches(self, code: str | None) -> bool:
        return code is not None and (code in self.exact or code.startswith(self.prefixes))

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return self.matches(self._get(ev))

    def code(self, consts: Consts) -> str:
        var = "_l." + self.attr if self.on_location else "ev." + self.attr
        parts = []
        if self.exact:
            parts.append(f"{var} in {consts.add(self.exact)}")
        if self.prefixes:
            parts.append(f"{var}.startswith({consts.add(self.prefixes)})")
        body = " or ".join(parts)
        if self.on_location:
            return f"((_l := ev.location) is not None and _l.{self.attr} is not None and ({body}))"
        return f"({body})"

    def describe(self) -> str:
        return f"{self.key} {'is' if len(self.shown) == 1 and not self.prefixes else 'in'} {_fmt(self.shown)}"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        return f"{self.attr}={self._get(ev)}"


@dataclass(frozen=True, eq=False)
class Located(Condition):
    """Whether the grid placed the event in a cell (`located: false` catches unlocated and outside events)."""

    expected: bool

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return (ev.location is not None and ev.location.cell is not None) is self.expected

    def code(self, consts: Consts) -> str:
        inner = "((_l := ev.location) is not None and _l.cell is not None)"
        return inner if self.expected else f"(not {inner})"

    def describe(self) -> str:
        return "located in a cell" if self.expected else "not located in any cell"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        return f"cell={None if ev.location is None else ev.location.cell}"


@dataclass(frozen=True, eq=False)
class TimeOfDay(Condition):
    """Local time of `occurred_at` in one of the windows, minutes of day [start, end), end < start wraps."""

    windows: tuple[tuple[int, int], ...]
    shown: tuple[str, ...]
    tz: ZoneInfo

    def cost(self) -> int:
        return COST_CLOCK

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return minute_in_windows(ev.occurred_at, self.tz, self.windows)

    def code(self, consts: Consts) -> str:
        # the windows become plain integer comparisons on one local-minute value
        minute = f"(_m := (_t := {consts.local_time(self.tz)}).hour * 60 + _t.minute)"
        tests = []
        for start, end in self.windows:
            tests.append(f"{start} <= _m < {end}" if start < end else f"_m >= {start} or _m < {end}")
        tests[0] = tests[0].replace("_m", minute, 1)
        return "(" + " or ".join(f"({t})" for t in tests) + ")"

    def describe(self) -> str:
        return f"time in {_fmt(self.shown)} ({self.tz.key})"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        return f"local time {local_time(ev.occurred_at, self.tz):%H:%M}"


@dataclass(frozen=True, eq=False)
class Weekday(Condition):
    """Local weekday of `occurred_at` (0 = Monday) in a set."""

    days: frozenset[int]
    tz: ZoneInfo

    def cost(self) -> int:
        return COST_CLOCK

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return local_time(ev.occurred_at, self.tz).weekday() in self.days

    def code(self, consts: Consts) -> str:
        return f"({consts.local_time(self.tz)}.weekday() in {consts.add(self.days)})"

    def describe(self) -> str:
        return f"weekday in {_fmt(tuple(WEEKDAYS[d] for d in sorted(self.days)))} ({self.tz.key})"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        return f"local weekday {WEEKDAYS[local_time(ev.occurred_at, self.tz).weekday()]}"


@dataclass(frozen=True, eq=False)
class TextSearch(Condition):
    """The description contains one of the keywords (case-insensitive) or matches a regular expression."""

    key: str  # "keywords" or "regex"
    pattern: re.Pattern[str]
    shown: tuple[str, ...]

    def cost(self) -> int:
        return COST_TEXT

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        return self.pattern.search(ev.description) is not None

    def code(self, consts: Consts) -> str:
        return f"({consts.add(self.pattern.search)}(ev.description) is not None)"

    def describe(self) -> str:
        if self.key == "keywords":
            return f"description mentions {' or '.join(repr(w) for w in self.shown)}"
        return f"description matches /{self.shown[0]}/"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        found = self.pattern.search(ev.description)
        return f"found {found.group(0)!r}" if found else "no match"


@dataclass(frozen=True, eq=False)
class ValueCompare(Condition):
    """The sensor reading satisfies every comparison (`>= 30`, `< 80`); no reading never matches."""

    comparisons: tuple[tuple[str, float], ...]

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        value = ev.value
        return value is not None and all(COMPARATORS[op](value, bound) for op, bound in self.comparisons)

    def code(self, consts: Consts) -> str:
        checks = " and ".join(f"ev.value {op} {consts.add(bound)}" for op, bound in self.comparisons)
        return f"(ev.value is not None and {checks})"

    def describe(self) -> str:
        return "value " + " and ".join(f"{op} {bound:g}" for op, bound in self.comparisons)

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        return f"value={ev.value}"


@dataclass(frozen=True, eq=False)
class Recurrence(Condition):
    """Earlier cases in the event's cell: `count` of cases of `category` within `window` compares with `n`.

    `category` is `same` (the event's own code), `same-class` (its major class, `E05*`) or a code / prefix.
    An event without a cell, or a dispatch without a counter, never matches.
    """

    category: str
    window: timedelta
    op: str
    n: int

    def cost(self) -> int:
        return COST_COUNT

    def pattern_for(self, ev: Event) -> str:
        if self.category == "same":
            return ev.category
        if self.category == "same-class":
            return ev.category[:3] + "*"
        return self.category

    def count(self, ev: Event, rec: RecurrenceCounter | None) -> int | None:
        if rec is None or ev.location is None or ev.location.cell is None:
            return None
        return rec.count(ev.location.cell, self.pattern_for(ev), self.window, ev.occurred_at)

    def test(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        found = self.count(ev, rec)
        return found is not None and bool(COMPARATORS[self.op](found, self.n))

    def code(self, consts: Consts) -> str:
        if self.category == "same":
            pattern = "ev.category"
        elif self.category == "same-class":
            pattern = "ev.category[:3] + '*'"
        else:
            pattern = consts.add(self.category)
        args = f"_l.cell, {pattern}, {consts.add(self.window)}, ev.occurred_at"
        test = f"rec.count({args}) {self.op} {consts.add(self.n)}"
        at_least = {">=": self.n, ">": self.n + 1}.get(self.op)
        if at_least is not None:
            # the in-memory history can answer "at least n?" without counting (see RecurrenceHistory.at_least);
            # the exact class, as a subclass may count differently
            test = (
                f"(rec.at_least({args}, {consts.add(at_least)}) if rec.__class__ is {consts.add(RecurrenceHistory)} "
                f"else {test})"
            )
        return f"(rec is not None and (_l := ev.location) is not None and _l.cell is not None and {test})"

    def describe(self) -> str:
        what = {"same": "this category", "same-class": "this major class"}.get(self.category, self.category)
        return f"earlier cases of {what} in this cell within {format_duration(self.window)} {self.op} {self.n}"

    def observed(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        if rec is None:
            return "no case history given"
        found = self.count(ev, rec)
        return "no cell" if found is None else f"{found} earlier ({self.pattern_for(ev)})"
