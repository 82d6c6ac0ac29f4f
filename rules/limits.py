"""The ruleset's time limits (docs/cases.md §3.2): how long the centre may take to dispatch a case, a team to
accept a dispatch round, and the verifier to verify a resolution.

    time_limits:                                  # optional; so is each of its keys (absent: shipped default)
      dispatch: 30m                               # first report -> first dispatch (the centre's own limit)
      accept: {1: 15m, 2: 1h, 3: 2h, 4: 4h}       # a round's dispatch -> its acceptance, per priority
      verify: {1: 2h, 2: 8h, 3: 24h, 4: 48h}      # a resolution -> its verification, per priority

The handling limit is not here: it is each rule's `sla`. A map replaces the shipped one as a whole (it is not
merged with it priority by priority). A priority missing from a map takes the limit of the largest priority
given below it, that is the nearest more urgent one (a missing 3 in `{1: 15m, 2: 1h, 4: 4h}` gets 1 h): never a
looser limit than a more urgent case gets. A priority more urgent than every one given takes the most urgent
limit given. So a lookup always answers, whatever the priority (a case dispatched under an older ruleset may
have a priority the running one no longer uses).

Validation: unknown keys, bad or non-positive durations, an empty map, and map keys that are not priorities
(whole numbers 1..5) or that no route of the file uses (a limit nobody can reach is a typo or a leftover).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from yaml.nodes import Node

from rules.nodes import Entry, NodeReader

PriorityLimits = tuple[tuple[int, timedelta], ...]  # (priority, limit), ascending priority, at least one
_KEYS = ("dispatch", "accept", "verify")


@dataclass(frozen=True)
class TimeLimits:
    """The time limits of a ruleset: `dispatch` for every case; `accept(priority)` and `verify(priority)` per
    priority (1 = most urgent), from the (priority, limit) pairs of the file or of the shipped defaults."""

    dispatch: timedelta
    accept_by_priority: PriorityLimits
    verify_by_priority: PriorityLimits

    def __post_init__(self) -> None:
        for name in ("accept_by_priority", "verify_by_priority"):
            pairs: PriorityLimits = getattr(self, name)
            priorities = [p for p, _ in pairs]
            if not pairs or priorities != sorted(set(priorities)):
                raise ValueError(f"{name}: expected (priority, limit) pairs in ascending priority, got {pairs!r}")
        limits = [self.dispatch, *(t for _, t in self.accept_by_priority), *(t for _, t in self.verify_by_priority)]
        if any(t <= timedelta(0) for t in limits):
            raise ValueError("time limits must be longer than zero")

    def accept(self, priority: int) -> timedelta:
        """How long a team has to accept a round of `priority`, counted from the round's dispatch."""
        return _limit(self.accept_by_priority, priority)

    def verify(self, priority: int) -> timedelta:
        """How long the verifier has to verify a resolution of a case of `priority`, counted from it."""
        return _limit(self.verify_by_priority, priority)


def _limit(pairs: PriorityLimits, priority: int) -> timedelta:
    """The limit of the largest priority given <= `priority`, else (more urgent than all) the first one's."""
    found = pairs[0][1]
    for given, limit in pairs:
        if given > priority:
            break
        found = limit
    return found


def _hours(*pairs: tuple[int, float]) -> PriorityLimits:
    return tuple((p, timedelta(hours=h)) for p, h in pairs)


DEFAULT_TIME_LIMITS = TimeLimits(
    dispatch=timedelta(minutes=30),
    accept_by_priority=_hours((1, 0.25), (2, 1), (3, 2), (4, 4)),
    verify_by_priority=_hours((1, 2), (2, 8), (3, 24), (4, 48)),
)


def parse_time_limits(
    reader: NodeReader, entry: Entry | None, priorities: tuple[int, int], used: frozenset[int] | None
) -> TimeLimits | None:
    """The `time_limits` block (DEFAULT_TIME_LIMITS when absent); None after recording problems.

    `priorities` is the (lowest, highest) priority a route may have; `used` the priorities the file's routes
    have (None when the rules could not be read: then only the range is checked)."""
    if entry is None:
        return DEFAULT_TIME_LIMITS
    fields = reader.mapping(entry.value, "time_limits", allowed=_KEYS)
    if fields is None:
        return None
    if not entry.value.value:
        reader.problem(entry.value, "time_limits", "empty: leave `time_limits` out for the shipped defaults")
        return None
    base = DEFAULT_TIME_LIMITS
    dispatch = (
        reader.duration(fields["dispatch"].value, "time_limits.dispatch") if "dispatch" in fields else base.dispatch
    )
    accept = (
        _per_priority(reader, fields["accept"].value, "time_limits.accept", priorities, used)
        if "accept" in fields
        else base.accept_by_priority
    )
    verify = (
        _per_priority(reader, fields["verify"].value, "time_limits.verify", priorities, used)
        if "verify" in fields
        else base.verify_by_priority
    )
    if dispatch is None or accept is None or verify is None:
        return None
    return TimeLimits(dispatch, accept, verify)


def _per_priority(
    reader: NodeReader, node: Node, key: str, priorities: tuple[int, int], used: frozenset[int] | None
) -> PriorityLimits | None:
    """A `{priority: duration}` map as ascending (priority, limit) pairs."""
    entries = reader.mapping(node, key)
    if entries is None:
        return None
    if not node.value:
        reader.problem(node, key, "give a limit for at least one priority, e.g. {1: 15m, 2: 1h}")
        return None
    pairs: dict[int, timedelta] = {}
    ok = True
    for name, item in entries.items():
        where = f"{key}.{name}"
        priority = reader.integer(item.key_node, where, *priorities)
        limit = reader.duration(item.value, where)
        if priority is None or limit is None:
            ok = False
        elif priority in pairs:  # `01` and `1` are two keys of YAML but one priority
            reader.problem(item.key_node, where, f"priority {priority} is given twice")
            ok = False
        elif used is not None and priority not in used:
            shown = ", ".join(str(p) for p in sorted(used))
            reader.problem(item.key_node, where, f"no route of this file has priority {priority} (used: {shown})")
            ok = False
        else:
            pairs[priority] = limit
    return tuple(sorted(pairs.items())) if ok else None
