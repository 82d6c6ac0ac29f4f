"""How often a cell has had a kind of case: what the `recurrence` condition asks.

`RecurrenceCounter` is what the engine calls; the worker owns the history (it records each case it opens,
after dispatching it, so a count is of *earlier* cases) and keeps it in its state. `RecurrenceHistory` is the
in-memory implementation: one sorted list of opening times per (cell, category), so a count is two bisections
per matching category, and a month of a district's cases (tens of thousands) costs a few megabytes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class RecurrenceCounter(Protocol):
    """Counts cases opened in a cell, by category, within a time window."""

    def count(self, cell: str, category_pattern: str, window: timedelta, at: datetime) -> int:
        """Cases opened in `cell` whose category is `category_pattern` (an exact code such as `E0501`, or a
        prefix ending in `*` such as `E05*`) with an opening time in the closed interval [at - window, at]."""
        ...


class RecurrenceHistory:
    """In-memory `RecurrenceCounter`: `record` each opened case, `count` them, `prune` what is too old.

    Times must be all timezone-aware or all naive (they are compared, never converted). Recording the same
    case twice counts it twice: the caller records a case once, when it is opened.
    """

    def __init__(self) -> None:
        # cell -> category -> sorted times; per cell so that a prefix count only scans that cell's codes
        self._cells: dict[str, dict[str, list[datetime]]] = defaultdict(dict)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def record(self, cell: str, category: str, at: datetime) -> None:
        """Remember a case of `category` opened in `cell` at `at` (any order; usually ascending)."""
        times = self._cells[cell].setdefault(category, [])
        if not times or times[-1] <= at:
            times.append(at)  # the common case: cases arrive in time order
        else:
            insort(times, at)
        self._size += 1

    def forget(self, cell: str, category: str, at: datetime) -> None:
        """Take back one `record` (a case voided on its check before filing was no problem: 核实)."""
        times = self._cells.get(cell, {}).get(category)
        if times:
            i = bisect_left(times, at)
            if i < len(times) and times[i] == at:
                del times[i]
                self._size -= 1

    def count(self, cell: str, category_pattern: str, window: timedelta, at: datetime) -> int:
        # called for many events of a dispatch batch: the usual answers (no history here) return first
        by_category = self._cells.get(cell)
        if not by_category:
            return 0
        if "*" in category_pattern and category_pattern[-1] == "*":  # `in` is the cheapest test of the two
            prefix = category_pattern[:-1]
            start = at - window
            return sum(
                _between(times, start, at) for code, times in by_category.items() if code.startswith(prefix)
            )
        times = by_category.get(category_pattern)
        if not times:
            return 0
        return bisect_right(times, at) - bisect_left(times, at - window)

    def at_least(self, cell: str, category_pattern: str, window: timedelta, at: datetime, n: int) -> bool:
        """`count(cell, category_pattern, window, at) >= n`, answered without counting when the cell has fewer
        than `n` cases of an exact code at all (the usual answer of a chronic-problem rule)."""
        if n <= 0:
            return True
        by_category = self._cells.get(cell)
        if not by_category:
            return False
        if "*" in category_pattern and category_pattern[-1] == "*":
            return self.count(cell, category_pattern, window, at) >= n
        times = by_category.get(category_pattern)
        if times is None or len(times) < n:
            return False
        return bisect_right(times, at) - bisect_left(times, at - window) >= n

    def prune(self, before: datetime) -> int:
        """Forget cases opened before `before`; return how many were dropped."""
        dropped = 0
        for cell in list(self._cells):
            by_category = self._cells[cell]
            for code in list(by_category):
                times = by_category[code]
                cut = bisect_left(times, before)
                if cut:
                    del times[:cut]
                    dropped += cut
                if not times:
                    del by_category[code]
            if not by_category:
                del self._cells[cell]
        self._size -= dropped
        return dropped


def _between(times: list[datetime], start: datetime, end: datetime) -> int:
    return bisect_right(times, end) - bisect_left(times, start)
