"""A dispatch rules file as frozen, typed objects: header, team defaults, rules, default route (rules.ruleparser
reads and validates the file into them).

File shape (see rules/hongkou.yaml for a full example):

    version: "2024.11"            # required, text; the ruleset version is this plus a content hash
    kind: dispatch-rules          # required, exactly this
    name: hongkou                 # required
    description: ...              # optional
    timezone: Asia/Shanghai       # optional; time and weekday conditions use it
    teams:                        # required: defaults of each team used (enforcement, handling, supervision)
      handling: {label: 综合处置, sla: 48h, priority: 3, escalate_to: supervision, notify: [...]}
    rules:                        # evaluated by ascending `order`; the first match wins
      - id: night-noise           # unique, lower-case words and dashes
        order: 100                # unique whole number
        description: ...          # optional
        enabled: true             # optional; false keeps the rule in the file but out of dispatch
        when: {...}               # optional (rules/when.py); absent matches every event
        then: {team: supervision, priority: 2, sla: 2h, escalate_to: ..., notify: [...], tags: [...]}
    default: {team: handling}     # required: the route when no rule matches (same keys as `then`)
    time_limits: {...}            # optional (rules/limits.py): dispatch, accept and verify limits
    after_photo: [P01*, ...]      # optional (rules/photos.py): categories whose resolve needs an after photo
    check_first: {categories: [...], within: 1h}   # optional (rules/checkfirst.py): 核实 before filing

`then` keys other than `team` fall back to the team's defaults; `notify` adds to the team's notify list.

A rule whose `when` names `fault` routes device-fault reports, and only those; every other rule routes problems
and never a device fault (`Rule.matches`). So a ruleset without a `fault` rule sends device faults to its
`default` route, whatever their category: a `-1` from a gas sensor is a broken gauge, not a gas leak.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from pipeline.model.events import Event
from rules.checkfirst import NO_CHECK_FIRST, CheckFirst
from rules.combinators import All, names_fault
from rules.limits import DEFAULT_TIME_LIMITS, TimeLimits
from rules.photos import NO_AFTER_PHOTO, AfterPhoto
from rules.recurrence import RecurrenceCounter

KIND = "dispatch-rules"
DEFAULT_TZ = "Asia/Shanghai"
PRIORITY_RANGE = (1, 5)  # 1 = most urgent


@dataclass(frozen=True)
class TeamDefaults:
    """What a route to `team` gets unless the rule says otherwise."""

    team: str
    label: str
    sla: timedelta
    priority: int
    escalate_to: str | None
    notify: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """A fully resolved `then`: where a case goes and how urgently."""

    team: str
    priority: int
    sla: timedelta
    escalate_to: str | None
    notify: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """One rule; `when` is always an `All` (empty when the file has no `when`).

    `for_faults` (derived from `when`): the rule names `fault`, so it routes device-fault reports and nothing
    else; otherwise it routes problems and never a device fault. `matches` is the rule's verdict with that
    applied; `when.test` alone is only the written conditions."""

    id: str
    order: int
    description: str
    when: All
    route: Route
    line: int
    enabled: bool = True
    for_faults: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "for_faults", names_fault(self.when))

    def fits_kind(self, ev: Event) -> bool:
        """Whether `ev` is of the kind this rule routes: a device fault for a `fault` rule, else a problem (a
        `fault` rule's own condition already refuses problems; this refuses faults to every other rule)."""
        return self.for_faults or ev.fault is None

    def matches(self, ev: Event, rec: RecurrenceCounter | None) -> bool:
        """The rule's verdict on `ev`: of its kind, and its `when` holds."""
        return self.fits_kind(ev) and self.when.test(ev, rec)

    def trace(self, ev: Event, rec: RecurrenceCounter | None) -> tuple[bool, list[str]]:
        """`matches` with every condition's line (as `Condition.trace`), and a first line when the rule does
        not route device faults and `ev` is one."""
        ok, lines = self.when.trace(ev, rec)
        if self.fits_kind(ev):
            return ok, lines
        return False, [
            f"[ ] a problem (rules without `fault` never route device faults)   (event: fault={ev.fault})",
            *lines,
        ]


@dataclass(frozen=True)
class RulesetSpec:
    """A parsed, valid rules file. `rules` are the enabled ones, sorted by `order`."""

    path: str
    name: str
    header_version: str
    digest: str  # first 10 hex digits of the file's SHA-256
    description: str
    tz: ZoneInfo
    teams: dict[str, TeamDefaults]
    rules: tuple[Rule, ...]
    disabled: tuple[Rule, ...]
    default: Route
    time_limits: TimeLimits = DEFAULT_TIME_LIMITS
    after_photo: AfterPhoto = NO_AFTER_PHOTO
    check_first: CheckFirst = NO_CHECK_FIRST

    @property
    def version(self) -> str:
        return f"{self.header_version}+{self.digest}"
