"""The ruleset's `check_first` block (核实, docs/cases.md §2.4): public reports that a patrol checks on site
before the case is filed.

    check_first:                   # optional; absent: every report is filed and dispatched at once
      categories: [E0301, E05*]    # codes or prefixes of the taxonomy, as `category` in `when`
      within: 1h                   # 核实时限: from the report to the patrol's check (default 1h)

A 12345 (hotline) report of such a category that opens a case does not go to a team: the case is `checking`,
assigned to the patrol (an assignment of kind `check`) with the deadline `within`. The patrol answers on
`cityops.case-updates` with `confirm` (属实: the case is filed and dispatched by the rules, its handling deadline
counted from then) or `void` (作废: not a problem, or nothing there; the case ends). A check not answered by its
deadline escalates like an overdue round. Patrol and sensor reports are never checked: a patrol saw the problem,
a sensor measured it. DOMAIN.md gives no figure for the check; one hour is the local choice (a patrol walks its
grid in about that; practice in digital urban management is "核实 within the hour").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from rules.categorylist import CategoryList, read_categories
from rules.leaves import WhenContext
from rules.nodes import Entry, NodeReader

DEFAULT_WITHIN = timedelta(hours=1)
_KEYS = ("categories", "within")


@dataclass(frozen=True)
class CheckFirst(CategoryList):
    """The categories of public reports checked before filing, and the time the patrol has for it."""

    within: timedelta = DEFAULT_WITHIN

    def required(self, source: str, category: str) -> bool:
        """Whether a report of `source` (hotline | patrol | iot) and `category` is checked before filing."""
        return source == "hotline" and self.covers(category)


NO_CHECK_FIRST = CheckFirst()


def parse_check_first(reader: NodeReader, entry: Entry | None, ctx: WhenContext | None) -> CheckFirst | None:
    """The block (NO_CHECK_FIRST when absent); None after recording problems."""
    if entry is None:
        return NO_CHECK_FIRST
    if ctx is None:           # the time zone was bad: that problem is recorded already
        return None
    top = reader.mapping(entry.value, "check_first", allowed=_KEYS, required=("categories",))
    if top is None or "categories" not in top:
        return None
    match = read_categories(reader, top["categories"].value, "check_first.categories", ctx)
    within = DEFAULT_WITHIN
    if "within" in top:
        got = reader.duration(top["within"].value, "check_first.within")
        if got is None:
            return None
        if got <= timedelta(0):
            reader.problem(top["within"].value, "check_first.within", "must be longer than zero")
            return None
        within = got
    if match is None:
        return None
    return CheckFirst(frozenset(match.exact), tuple(match.prefixes), within)
