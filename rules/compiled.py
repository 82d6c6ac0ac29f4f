"""Rules compiled for fast dispatch: one generated chooser function per (fault, source, category).

Compilation happens once per ruleset load. For every source and taxonomy category, and for problems (fault
None) and each kind of device fault, each rule's `when` is partially evaluated with those known
(`specialize`): conditions on source, discovered_by, category and fault, wherever they sit in the tree, become
true or false, so rules that cannot apply disappear and `any` branches that cannot hold are dropped. Rules of
the other kind (`fault` rules for a problem, every other rule for a fault: rules/spec.py, `Rule`) are left out
altogether. What is left is generated as one Python function per list,

    def choose(ev, rec):
        if <rule A's remaining conditions>: return A
        if <rule B's remaining conditions>: return B
        return DEFAULT

so an event costs two dictionary lookups (source, then category) in the table of its kind and at most one
call. The generated code never looks at `ev.fault`: a problem pays one `is None` test for device faults, and a
`fault` rule with nothing else to test decides its faults without a call. When the first remaining rule has
no condition left, no function is made at all. A chooser returns a `Decision`: everything a
dispatch says except the due time, made once per rule (or once per reason, for rules whose reason depends on
which `any` branch matched) and shared by every event that rule decides, so routing allocates nothing per event.
The source text is built only from fixed templates in rules/conditions.py; every value from the rules file is
passed in as a named constant, never spliced into the text.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import ClassVar

from pipeline.model.events import DEVICE_FAULTS, Event
from pipeline.model.sources import SOURCES
from pipeline.model.taxonomy import Taxonomy
from rules.combinators import All, AnyOf, Not
from rules.conditions import CodeMatch, Condition, Consts, Membership
from rules.recurrence import RecurrenceCounter
from rules.spec import Route, Rule

Predicate = Callable[[Event, RecurrenceCounter | None], bool]
DEFAULT_RULE_ID = "default"


@dataclass(frozen=True)
class Decision(Route):
    """Where an event goes, without the due time: its rule's `Route` (team, urgency, SLA, escalation target,
    extra notifications, tags: the one list of dispatch fields, rules.spec.Route), and which rule of which
    ruleset version decided it and why.

    Immutable and shared: every event a rule decides (with the same reason) gets the same object."""

    rule_id: str
    reason: str
    ruleset_version: str
    # A Dispatch's fields but its due time, as a plain dict made once; rules.engine copies it into each Dispatch
    # (cheaper than copying `__dict__`) and then sets `due_at`, which is already a key, so the copy never grows.
    # Not a dataclass field: not compared, not shown, remade by `replace`. Never modify it.
    _dispatch_fields: ClassVar[dict[str, object]]

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        object.__setattr__(self, "_dispatch_fields", {**values, "due_at": None})


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A rule ready to dispatch: its route as a shared Decision, and how to say why when that depends on
    the event."""

    rule: Rule | None  # None for the default route
    rule_id: str
    route: Route
    sla: timedelta
    decision: Decision  # the decision of every event; when `dynamic`, its reason is "" and `decide` fills it
    dynamic: bool  # True when the reason depends on which `any` branch matched
    # reason -> Decision for a dynamic rule: `why` can only name one of finitely many branches
    _by_reason: dict[str, Decision] = field(default_factory=dict, compare=False, repr=False)

    def reason_for(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        if self.rule is None:
            return "no rule matched: default route"
        return f"rule {self.rule_id} (order {self.rule.order}): {self.rule.when.why(ev, rec)}"

    def decide(self, ev: Event, rec: RecurrenceCounter | None) -> Decision:
        """The decision for `ev`, which this rule matched."""
        if not self.dynamic:
            return self.decision
        reason = self.reason_for(ev, rec)
        found = self._by_reason.get(reason)
        if found is None:
            found = self._by_reason[reason] = replace(self.decision, reason=reason)
        return found


Chooser = Callable[[Event, RecurrenceCounter | None], Decision]
# (chooser or None, decision): with no chooser, `decision` is the one for every event of that source and category
Entry = tuple[Chooser | None, Decision]


def compile_rule(rule: Rule, version: str) -> CompiledRule:
    dynamic = rule.when.has_choice()
    reason = "" if dynamic else f"rule {rule.id} (order {rule.order}): {rule.when.describe()}"
    return CompiledRule(
        rule, rule.id, rule.route, rule.route.sla, _decision(rule.route, rule.id, reason, version), dynamic
    )


def compile_default(route: Route, version: str) -> CompiledRule:
    reason = "no rule matched: default route"
    return CompiledRule(
        None, DEFAULT_RULE_ID, route, route.sla, _decision(route, DEFAULT_RULE_ID, reason, version), False
    )


def specialize(cond: Condition, source: str, category: str, fault: str | None = None) -> Condition | bool:
    """`cond` for events known to have this source, category and fault (None: a problem): True, False, or
    what remains to test."""
    if isinstance(cond, Membership) and not cond.on_location:
        if cond.attr == "source":
            return source in cond.values
        if cond.attr == "fault":
            return fault in cond.values
    if isinstance(cond, CodeMatch) and cond.attr == "category" and not cond.on_location:
        return cond.matches(category)
    if isinstance(cond, All):
        kept: list[Condition] = []
        for child in cond.children:
            part = specialize(child, source, category, fault)
            if part is False:
                return False
            if part is not True:
                kept.append(part)
        return True if not kept else (kept[0] if len(kept) == 1 else All(tuple(kept)))
    if isinstance(cond, AnyOf):
        options: list[Condition] = []
        for child in cond.children:
            part = specialize(child, source, category, fault)
            if part is True:
                return True
            if part is not False:
                options.append(part)
        return False if not options else (options[0] if len(options) == 1 else AnyOf(tuple(options)))
    if isinstance(cond, Not):
        inner = specialize(cond.child, source, category, fault)
        return (not inner) if isinstance(inner, bool) else Not(inner)
    return cond


def variants(rule: CompiledRule, version: str, limit: int = 16) -> list[tuple[All, CompiledRule]]:
    """A rule with `any` at its top level as one alternative per branch combination, each with a fixed
    reason, so the compiled path need not work out which branch matched. Alternatives are in the order
    `why` tries branches, so the reason is the same. Beyond `limit` combinations the rule stays one dynamic
    alternative."""
    assert rule.rule is not None
    when = rule.rule.when
    choices = [c.children for c in when.children if isinstance(c, AnyOf)]
    combos = list(itertools.product(*choices)) if choices else []
    if not choices or len(combos) > limit:
        return [(when, rule)]
    out: list[tuple[All, CompiledRule]] = []
    for combo in combos:
        parts: list[Condition] = []
        for child in when.children:
            if isinstance(child, AnyOf):
                branch = combo[choices.index(child.children)]
                parts.extend(branch.children if isinstance(branch, All) else (branch,))
            else:
                parts.append(child)
        variant = All(tuple(parts))
        dynamic = variant.has_choice()
        reason = "" if dynamic else f"rule {rule.rule_id} (order {rule.rule.order}): {variant.describe()}"
        decision = replace(rule.decision, reason=reason)
        out.append((variant, CompiledRule(rule.rule, rule.rule_id, rule.route, rule.sla, decision, dynamic)))
    return out


def candidates(
    steps: tuple[tuple[All, CompiledRule], ...], source: str, category: str, fault: str | None = None
) -> list[tuple[Condition | bool, CompiledRule]]:
    """The alternatives that can still match for this source, category and fault, in order, with what remains
    of their conditions, ending at the first one with nothing left to test."""
    out: list[tuple[Condition | bool, CompiledRule]] = []
    for when, rule in steps:
        assert rule.rule is not None
        if rule.rule.for_faults is (fault is None):
            continue  # a rule routes device faults or problems, never both
        rest = specialize(when, source, category, fault)
        if rest is False:
            continue
        out.append((rest, rule))
        if rest is True:
            break
    return out


class ChooserFactory:
    """Builds and shares choosers: lists that specialize to the same conditions get the same function."""

    def __init__(self, rules: tuple[CompiledRule, ...], default: CompiledRule, version: str) -> None:
        self.steps = tuple(step for rule in rules for step in variants(rule, version))
        self.default = default
        self._cache: dict[tuple[object, ...], Chooser] = {}

    def entry(self, source: str, category: str, fault: str | None = None) -> Entry:
        """What routes events of this source, category and fault (None: a problem)."""
        steps = candidates(self.steps, source, category, fault)
        if not steps:
            return None, self.default.decision
        if steps[0][0] is True and not steps[0][1].dynamic:
            return None, steps[0][1].decision
        consts = Consts()
        body: list[str] = []
        final = self.default
        for rest, rule in steps:
            if rest is True:
                final = rule
                break
            assert isinstance(rest, Condition)
            body.append(f"    if {rest.code(consts)}:\n        return {_result(rule, consts)}")
        body.append(f"    return {_result(final, consts)}")
        lines = ["def choose(ev, rec):", *(f"    {line}" for line in consts.preamble()), *body]
        source_text = "\n".join(lines) + "\n"
        # constants are the very objects of the parsed rules, so their ids identify them while the rules live
        key = (source_text, *(id(v) for v in consts.values.values()))
        found = self._cache.get(key)
        if found is None:
            namespace: dict[str, object] = dict(consts.values)
            where = f"{source}.{category}" if fault is None else f"{fault} fault {source}.{category}"
            exec(compile(source_text, f"<rules {where}>", "exec"), namespace)  # noqa: S102
            found = namespace["choose"]  # type: ignore[assignment]
            self._cache[key] = found  # type: ignore[assignment]
        return found, final.decision

    def __len__(self) -> int:
        return len(self._cache)


Table = dict[str, dict[str, Entry]]


def index(factory: ChooserFactory, taxonomy: Taxonomy, fault: str | None = None) -> Table:
    """source -> category -> entry, for every source and every taxonomy code, for problems (fault None) or for
    device faults of one kind. Two lookups of strings (whose hashes Python caches) cost less than building and
    hashing a (source, category) key per event."""
    codes = taxonomy.codes()
    return {source: {code: factory.entry(source, code, fault) for code in codes} for source in SOURCES}


def fault_index(factory: ChooserFactory, taxonomy: Taxonomy) -> dict[str, Table]:
    """fault -> the `index` of device faults of that kind. Most entries are a fixed decision (a ruleset has
    few `fault` rules), and equal choosers are shared, so the three tables cost little."""
    return {fault: index(factory, taxonomy, fault) for fault in DEVICE_FAULTS}


def compile_predicate(name: str, condition: Condition) -> Predicate:
    """One Python function `(ev, rec) -> bool` equivalent to `condition.test` (used by tests and tools)."""
    consts = Consts()
    expression = condition.code(consts)
    source = "\n".join([f"def {name}(ev, rec):", *(f"    {line}" for line in consts.preamble()),
                         f"    return bool({expression})"]) + "\n"
    namespace: dict[str, object] = dict(consts.values)
    exec(compile(source, f"<rule {name}>", "exec"), namespace)  # noqa: S102
    fn: Predicate = namespace[name]  # type: ignore[assignment]
    return fn


def _result(rule: CompiledRule, consts: Consts) -> str:
    """What a chooser returns when `rule` wins: its shared decision, or the call that names the branch."""
    return consts.add(rule.decision) if not rule.dynamic else f"{consts.add(rule.decide)}(ev, rec)"


def _decision(route: Route, rule_id: str, reason: str, version: str) -> Decision:
    return Decision(
        route.team, route.priority, route.sla, route.escalate_to, route.notify, route.tags, rule_id, reason, version
    )
