"""Rules compiled for fast dispatch: one generated function per rule, candidate lists per (source, category).

Compilation happens once per ruleset load. Each rule's `when` becomes one Python function (source text built
only from fixed templates in rules/conditions.py; every value from the file is passed in as a named constant).
The conditions on `source` / `discovered_by` and `category` at the top of a rule are not compiled into it:
they decide which (source, category) lists the rule is put in, so an event only runs the rules that can apply
to it, in order, and a rule left with no other condition is taken without a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from pipeline.model import SOURCES, Event
from pipeline.taxonomy import Taxonomy
from rules.conditions import All, CodeMatch, Condition, Consts, Membership
from rules.recurrence import RecurrenceCounter
from rules.spec import Route, Rule

Predicate = Callable[[Event, RecurrenceCounter | None], bool]
DEFAULT_RULE_ID = "default"


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A rule ready to dispatch: its route as the constant fields of a Dispatch, and how to say why."""

    rule: Rule | None  # None for the default route
    rule_id: str
    route: Route
    sla: timedelta
    template: dict[str, object]  # every Dispatch field except due_at (and reason when `dynamic`)
    dynamic: bool  # True when the reason depends on which `any` branch matched
    sources: frozenset[str]
    category: CodeMatch | None
    residual: Predicate | None  # what remains after the index; None = always true in its lists

    def reason_for(self, ev: Event, rec: RecurrenceCounter | None) -> str:
        if self.rule is None:
            return "no rule matched: default route"
        return f"rule {self.rule_id} (order {self.rule.order}): {self.rule.when.why(ev, rec)}"


def compile_predicate(name: str, condition: Condition) -> Predicate:
    """One Python function `(ev, rec) -> bool` equivalent to `condition.test`."""
    consts = Consts()
    source = f"def {name}(ev, rec):\n    return bool({condition.code(consts)})\n"
    namespace: dict[str, object] = dict(consts.values)
    # exec of our own template text: the rules file only contributes constants, bound through `namespace`
    exec(compile(source, f"<rule {name}>", "exec"), namespace)  # noqa: S102
    fn: Predicate = namespace[name]  # type: ignore[assignment]
    return fn


def compile_rule(rule: Rule, version: str) -> CompiledRule:
    sources = frozenset(SOURCES)
    category: CodeMatch | None = None
    residual: list[Condition] = []
    for child in rule.when.children:
        if isinstance(child, Membership) and child.attr == "source" and not child.on_location:
            sources &= child.values
        elif isinstance(child, CodeMatch) and child.attr == "category" and category is None:
            category = child
        else:
            residual.append(child)
    predicate = compile_predicate(_identifier(rule.id), All(tuple(residual))) if residual else None
    dynamic = rule.when.has_choice()
    reason = "" if dynamic else f"rule {rule.id} (order {rule.order}): {rule.when.describe()}"
    return CompiledRule(
        rule,
        rule.id,
        rule.route,
        rule.route.sla,
        _template(rule.route, rule.id, reason, version),
        dynamic,
        sources,
        category,
        predicate,
    )


def compile_default(route: Route, version: str) -> CompiledRule:
    return CompiledRule(
        None,
        DEFAULT_RULE_ID,
        route,
        route.sla,
        _template(route, DEFAULT_RULE_ID, "no rule matched: default route", version),
        False,
        frozenset(SOURCES),
        None,
        None,
    )


Bucket = tuple[tuple[Predicate | None, CompiledRule], ...]


def bucket(rules: tuple[CompiledRule, ...], default: CompiledRule, source: str, category: str) -> Bucket:
    """The rules that can match events of `source` and `category`, in order, ending at the first rule that
    always matches there (or the default)."""
    out: list[tuple[Predicate | None, CompiledRule]] = []
    for rule in rules:
        if source not in rule.sources or (rule.category is not None and not rule.category.matches(category)):
            continue
        out.append((rule.residual, rule))
        if rule.residual is None:
            return tuple(out)
    out.append((None, default))
    return tuple(out)


def index(
    rules: tuple[CompiledRule, ...], default: CompiledRule, taxonomy: Taxonomy
) -> dict[str, dict[str, Bucket]]:
    """source -> category -> bucket, for every source and every taxonomy code."""
    return {
        source: {code: bucket(rules, default, source, code) for code in taxonomy.codes()}
        for source in SOURCES
    }


def _template(route: Route, rule_id: str, reason: str, version: str) -> dict[str, object]:
    return {
        "team": route.team,
        "priority": route.priority,
        "sla": route.sla,
        "escalate_to": route.escalate_to,
        "notify": route.notify,
        "tags": route.tags,
        "rule_id": rule_id,
        "reason": reason,
        "ruleset_version": version,
    }


def _identifier(rule_id: str) -> str:
    return "rule_" + "".join(ch if ch.isalnum() else "_" for ch in rule_id)
