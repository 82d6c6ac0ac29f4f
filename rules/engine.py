"""The dispatch rules engine: load a ruleset, dispatch events, explain decisions, reload safely while running.

    ruleset = load_ruleset(DEFAULT_RULES)                  # RulesError (.problems) if the file is wrong
    d = ruleset.dispatch(event, history)                   # Dispatch(team, priority, sla, due_at, ...)
    r = ruleset.decide(event, history)                     # the same without due_at: a shared Decision
    print(ruleset.explain(event, history).render())        # every rule considered, matched or not and why
    ruleset.time_limits.accept(priority)                   # the ruleset's time limits (rules/limits.py)

`due_at` is the event's `occurred_at` + SLA (the SLA clock starts when the problem was reported, and a replay
gives the same due time), unless the caller passes `now` (e.g. when dispatching a case opened long after the
event), then `now` + SLA. `decide` / `decide_batch` are the fast path for callers that work out the due time
themselves (`at + decision.sla`): they return the rule's shared, immutable `Decision` and allocate nothing per
event, where `dispatch` builds a new `Dispatch` for each.

Device-fault reports (`event.fault` set) are routed only by rules naming `fault`, or else by the default route,
never by a rule for problems (rules/spec.py, `Rule`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.model.events import Event
from pipeline.model.taxonomy import Taxonomy, default_taxonomy
from pipeline.model.watched import WatchedFile
from rules.checkfirst import CheckFirst
from rules.compiled import (
    ChooserFactory,
    CompiledRule,
    Decision,
    Entry,
    Table,
    compile_default,
    compile_rule,
    fault_index,
    index,
    specialize,
)
from rules.durations import format_duration
from rules.errors import RulesError
from rules.limits import TimeLimits
from rules.photos import AfterPhoto
from rules.recurrence import RecurrenceCounter
from rules.ruleparser import parse_ruleset
from rules.shadow import shadow_warnings
from rules.spec import RulesetSpec

DEFAULT_RULES = Path(__file__).resolve().parent / "hongkou.yaml"

log = logging.getLogger("cityops.rules")

# Metric names, declared once (the worker exports RulesHolder.metrics() under these names).
METRIC_RELOADS = "cityops_rules_reloads_total"  # new versions installed by hot reload
METRIC_REFUSALS = "cityops_rules_reload_refusals_total"  # invalid new versions refused (old one kept)
METRIC_REFUSING = "cityops_rules_reload_refusing"  # 1 while the file on disk is refused, else 0

_new = object.__new__
_NO_ENTRIES: dict[str, Entry] = {}
_NO_TABLE: Table = {}


@dataclass(frozen=True)
class Dispatch:
    """Where one event goes: team, urgency (priority 1 = most urgent), SLA and due time, escalation target on
    overdue, extra notifications, tags, and which rule of which ruleset version decided it and why."""

    team: str
    priority: int
    sla: timedelta
    due_at: datetime
    escalate_to: str | None
    notify: tuple[str, ...]
    tags: tuple[str, ...]
    rule_id: str
    reason: str
    ruleset_version: str


@dataclass(frozen=True)
class RuleTrace:
    """One rule as `explain` saw it: whether the event passed the index, matched, and was chosen."""

    rule_id: str
    order: int | None
    description: str
    candidate: bool  # kind, source, category and fault fit (otherwise the compiled engine never evaluates it)
    matched: bool
    chosen: bool
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Explanation:
    """A dispatch decision with every rule considered (in order) and the default."""

    event_id: str
    ruleset_version: str
    dispatch: Dispatch
    rules: tuple[RuleTrace, ...]

    def render(self) -> str:
        d = self.dispatch
        out = [
            f"event {self.event_id} -> {d.team} (priority {d.priority}, SLA {format_duration(d.sla)}, "
            f"due {d.due_at.isoformat()})",
            f"  rule: {d.rule_id}   ruleset: {self.ruleset_version}",
            f"  reason: {d.reason}",
            f"  escalate to: {d.escalate_to or '-'}   notify: {', '.join(d.notify) or '-'}   "
            f"tags: {', '.join(d.tags) or '-'}",
            "",
            "rules considered:",
        ]
        for t in self.rules:
            verdict = "CHOSEN" if t.chosen else ("matched (an earlier rule won)" if t.matched else "no match")
            where = f"order {t.order}" if t.order is not None else "fallback"
            out.append(f"- {t.rule_id} ({where}): {verdict}" + (f" - {t.description}" if t.description else ""))
            out += [f"    {line}" for line in t.lines]
        return "\n".join(out)


class Ruleset:
    """A loaded, compiled ruleset. Immutable; safe to share between threads (the one thing that changes is
    the cache of per-reason Decisions of rules whose reason names an `any` branch: two threads racing on it
    store equal values).

    `time_limits` are the file's dispatch, accept and verify limits (rules/limits.py; the shipped defaults when
    the file has none)."""

    def __init__(self, spec: RulesetSpec, taxonomy: Taxonomy) -> None:
        self.spec = spec
        self.version = spec.version
        self.name = spec.name
        self.time_limits: TimeLimits = spec.time_limits
        self.after_photo: AfterPhoto = spec.after_photo      # rules/photos.py
        self.check_first: CheckFirst = spec.check_first      # rules/checkfirst.py
        self.warnings: list[str] = shadow_warnings(spec, taxonomy)
        self.rules: tuple[CompiledRule, ...] = tuple(compile_rule(r, self.version) for r in spec.rules)
        self.default = compile_default(spec.default, self.version)
        self._factory = ChooserFactory(self.rules, self.default, self.version)
        self._table: Table = index(self._factory, taxonomy)  # problems: nearly every event
        self._fault_tables: dict[str, Table] = fault_index(self._factory, taxonomy)
        self._by_id = {rule.rule_id: rule for rule in self.rules}

    def _entry(self, source: str, category: str, fault: str | None) -> Entry:
        table = self._table if fault is None else self._fault_tables.get(fault, _NO_TABLE)
        found = table.get(source, _NO_ENTRIES).get(category)
        # a code outside the taxonomy (bad input upstream) still gets a route, just not a prepared entry
        return found if found is not None else self._factory.entry(source, category, fault)

    def choose(self, event: Event, recurrence: RecurrenceCounter | None = None) -> CompiledRule:
        """The first rule (by order) that matches, or the default."""
        decision = self.decide(event, recurrence)
        if decision is self.default.decision:
            return self.default
        return self._by_id[decision.rule_id]

    def decide(self, event: Event, recurrence: RecurrenceCounter | None = None) -> Decision:
        """Route one event: the shared Decision of the rule that wins (no due time). Without a `recurrence`
        counter, recurrence conditions do not match."""
        try:
            table = self._table if event.fault is None else self._fault_tables[event.fault]
            chooser, decision = table[event.source][event.category]
        except KeyError:
            chooser, decision = self._entry(event.source, event.category, event.fault)
        return decision if chooser is None else chooser(event, recurrence)

    def decide_batch(self, events: Iterable[Event], recurrence: RecurrenceCounter | None = None) -> list[Decision]:
        """Route many events, in order; the same result as `decide` on each, faster."""
        problems, faults = self._table, self._fault_tables
        slow = self._entry
        out: list[Decision] = []
        append = out.append
        for ev in events:
            try:
                chooser, decision = (problems if ev.fault is None else faults[ev.fault])[ev.source][ev.category]
            except KeyError:
                chooser, decision = slow(ev.source, ev.category, ev.fault)
            append(decision if chooser is None else chooser(ev, recurrence))
        return out

    def dispatch(
        self, event: Event, recurrence: RecurrenceCounter | None = None, now: datetime | None = None
    ) -> Dispatch:
        """Route one event. Without a `recurrence` counter, recurrence conditions do not match."""
        decision = self.decide(event, recurrence)
        return _dispatch(decision, (event.occurred_at if now is None else now) + decision.sla)

    def dispatch_batch(
        self, events: Iterable[Event], recurrence: RecurrenceCounter | None = None, now: datetime | None = None
    ) -> list[Dispatch]:
        """Route many events, in order; the same result as `dispatch` on each, faster."""
        problems, faults = self._table, self._fault_tables
        slow = self._entry
        out: list[Dispatch] = []
        append = out.append
        for ev in events:
            try:
                chooser, decision = (problems if ev.fault is None else faults[ev.fault])[ev.source][ev.category]
            except KeyError:
                chooser, decision = slow(ev.source, ev.category, ev.fault)
            if chooser is not None:
                decision = chooser(ev, recurrence)
            # a frozen dataclass filled from the shared decision's fields: one dict copy per event
            d = _new(Dispatch)
            fields = d.__dict__
            fields.update(decision._dispatch_fields)
            fields["due_at"] = (ev.occurred_at if now is None else now) + decision.sla
            append(d)
        return out

    def explain(
        self, event: Event, recurrence: RecurrenceCounter | None = None, now: datetime | None = None
    ) -> Explanation:
        """The dispatch of `event` with every rule's verdict; the chosen rule is the one `dispatch` picks."""
        chosen = self.choose(event, recurrence)
        traces: list[RuleTrace] = []
        for rule in self.rules:
            assert rule.rule is not None
            candidate = (
                rule.rule.for_faults is (event.fault is not None)
                and specialize(rule.rule.when, event.source, event.category, event.fault) is not False
            )
            matched, lines = rule.rule.trace(event, recurrence)
            traces.append(
                RuleTrace(
                    rule.rule_id,
                    rule.rule.order,
                    rule.rule.description,
                    candidate,
                    matched,
                    rule.rule_id == chosen.rule_id,
                    tuple(lines),
                )
            )
        traces.append(
            RuleTrace(self.default.rule_id, None, "when no rule matches", True, True, chosen.rule is None, ())
        )
        return Explanation(event.event_id, self.version, self.dispatch(event, recurrence, now), tuple(traces))


def _dispatch(decision: Decision, due_at: datetime) -> Dispatch:
    """A Dispatch with the decision's fields and `due_at`, without running the dataclass `__init__`."""
    d = _new(Dispatch)
    d.__dict__.update(decision._dispatch_fields)
    d.__dict__["due_at"] = due_at
    return d


def load_ruleset(path: Path = DEFAULT_RULES, taxonomy: Taxonomy | None = None) -> Ruleset:
    """Parse, validate and compile a rules file; raise RulesError listing every problem."""
    tax = taxonomy or default_taxonomy()
    return Ruleset(parse_ruleset(Path(path), tax), tax)


class RulesHolder(WatchedFile[Ruleset]):
    """The ruleset a running worker uses, swapped atomically when the file changes (pipeline.model.watched).

    Construction loads the file and raises RulesError when it is invalid (a worker must not start on bad
    rules). Later, `maybe_reload()` (cheap: one stat) reloads when the file's signature changed; a new version
    that fails validation is refused: the current ruleset keeps running, `refusals` grows, `last_error` holds
    the problems and a WARNING is logged. Readers take `holder.current` once per batch; the swap is a single
    reference assignment, so a batch never sees half of a ruleset.
    """

    label = "rules"
    refused = (RulesError,)

    def __init__(self, path: Path = DEFAULT_RULES, taxonomy: Taxonomy | None = None) -> None:
        self._taxonomy = taxonomy or default_taxonomy()
        super().__init__(Path(path))
        for warning in self.current.warnings:
            log.warning("rules warning: %s", warning)

    def load(self) -> Ruleset:
        return load_ruleset(self.file(), self._taxonomy)

    def same(self, old: Ruleset, new: Ruleset) -> bool:
        return old.version == new.version

    def on_refused(self, err: Exception) -> None:
        problems = err.problems if isinstance(err, RulesError) else [str(err)]
        log.warning("rules reload refused, keeping version %s: %s", self.current.version, "; ".join(problems))

    def on_installed(self, previous: Ruleset) -> None:
        log.info("rules reloaded: %s -> %s", previous.version, self.current.version)
        for warning in self.current.warnings:
            log.warning("rules warning: %s", warning)

    def status(self) -> dict[str, object]:
        """For the ops-centre page: the running version, and whether (and why) the file on disk is refused."""
        return {
            "path": str(self.path),
            "version": self.current.version,
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "refusals": self.refusals,
            "refusing": self.last_error is not None,
            "last_error": self.last_error,
            "last_refused_at": self.last_refused_at,
            "warnings": list(self.current.warnings),
        }

    def metrics(self) -> dict[str, float]:
        return {
            METRIC_RELOADS: float(self.reloads),
            METRIC_REFUSALS: float(self.refusals),
            METRIC_REFUSING: 1.0 if self.last_error is not None else 0.0,
        }
