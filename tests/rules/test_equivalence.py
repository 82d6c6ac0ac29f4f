"""The compiled engine decides exactly what the naive interpreter and the condition tree decide.

Three independent ways to route an event are compared field by field:
- the compiled engine (`decide`, `decide_batch`, `dispatch`, `dispatch_batch`: generated choosers, source ->
  category tables, shared Decisions, local time converted once per call);
- the naive interpreter (`rules.naive`: the YAML walked as dicts; its reason text is only "rule <id>");
- the condition tree walked rule by rule (`Rule.matches`: the rule's kind, then `Condition.test`; `why` for the
  reason), with no index, no specialisation and no generated code.

The generated events include device faults (`Event.fault`), which only rules naming `fault` may take.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.bench.rules import HONGKOU_SUBDISTRICTS, generate_events, month_of_history
from pipeline.model.events import Event, Location
from pipeline.model.taxonomy import default_taxonomy
from rules.compiled import ChooserFactory, Decision, candidates
from rules.engine import DEFAULT_RULES, Dispatch, Ruleset, load_ruleset
from rules.naive import NaiveRuleset
from rules.recurrence import RecurrenceHistory
from tests.rules.factories import rules_file

FIELDS = ("team", "priority", "sla", "due_at", "escalate_to", "notify", "tags", "rule_id", "ruleset_version")
NAIVE_FIELDS = FIELDS[:-1]  # the naive interpreter knows the header version only, not the file digest
SHANGHAI = ZoneInfo("Asia/Shanghai")
RULESET = load_ruleset()
NAIVE = NaiveRuleset(DEFAULT_RULES)
CODES = default_taxonomy().codes()
SENSOR_TYPES = ("elderly_button", "bed_mat_inactive", "gas_concentration", "water_level", "manhole_tilt",
                "manhole_open", "smoke", "bin_fill", "noise", "pipe_pressure", "dust_pm10", "heritage_crack")
# readings on and around every threshold of the shipped rules
VALUES = (None, 0.0, 0.99, 1.0, 9.99, 10.0, 14.9, 15.0, 19.99, 20.0, 54.9, 55.0, 89.9, 90.0, 719.0, 720.0)
TEXTS = ("", "晚上噪音扰民", "NOISE at night", "Noise", "井盖丢失", "井盖昨天晚上被偷了",
         "井盖那边很久很久很久很久了丢失", "manhole 井盖 MISSING", "老人摔倒了", "School gate", "门口堆放垃圾",
         "please send someone", "太吵")
# codes of the shipped rules that also look at time, place, text or history, drawn more often
HOT_CODES = ("E0504", "E0501", "E0510", "E0508", "E0301", "P0118", "P0101", "E0110", "E0403", "E0105", "E0113")
# local (Shanghai) times on the edges of the shipped windows: 06:00, 07:00, 09:30, 17:00, 18:00, 21:00, 22:00
EDGE_MINUTES = (0, 359, 360, 419, 420, 569, 570, 1019, 1020, 1079, 1080, 1259, 1260, 1319, 1320, 1439)
# about one report in five a device fault, of every kind
FAULTS = (None, None, None, None, None, None, None, None, "stuck", "silent", "error")


def reference(ruleset: Ruleset, ev: Event, rec: RecurrenceHistory | None, now: datetime | None = None) -> Dispatch:
    """The dispatch worked out from the condition tree alone, rule by rule in order."""
    spec = ruleset.spec
    for rule in spec.rules:
        if rule.matches(ev, rec):
            rule_id, route = rule.id, rule.route
            reason = f"rule {rule.id} (order {rule.order}): {rule.when.why(ev, rec)}"
            break
    else:
        rule_id, route, reason = "default", spec.default, "no rule matched: default route"
    return Dispatch(route.team, route.priority, route.sla, (ev.occurred_at if now is None else now) + route.sla,
                    route.escalate_to, route.notify, route.tags, rule_id, reason, ruleset.version)


def check_all_agree(ruleset: Ruleset, naive: NaiveRuleset, events: list[Event],
                    history: RecurrenceHistory | None) -> set[str]:
    """Assert every compiled entry point, the tree and the naive interpreter agree; return the rules seen."""
    decided = ruleset.decide_batch(events, history)
    batch = ruleset.dispatch_batch(events, history)
    naive_batch = naive.dispatch_batch(events, history)
    for ev, decision, d, n in zip(events, decided, batch, naive_batch, strict=True):
        want = reference(ruleset, ev, history)
        assert d == want, ev
        assert ruleset.dispatch(ev, history) == want, ev
        assert ruleset.decide(ev, history) is decision, ev     # shared: the same object both ways
        assert decision == Decision(**{k: getattr(want, k) for k in FIELDS if k != "due_at"}, reason=want.reason)
        assert tuple(getattr(n, k) for k in NAIVE_FIELDS) == tuple(getattr(d, k) for k in NAIVE_FIELDS), ev
    return {d.rule_id for d in decided}


def edge_events(n: int, seed: int, naive_times: bool = False, faults: bool = True) -> list[Event]:
    """Events built to sit on the edges the compiled engine specialises on: no location or a location without
    a cell, sub-districts of special rules, naive and non-UTC times on window and weekday edges, readings on
    thresholds, keywords in other letter cases, categories outside the taxonomy, and (unless `faults` is false)
    device faults of every kind from any source: the rules must not care where a fault comes from. Naive times
    (taken as UTC) only when asked: a history holds aware times, and cannot be compared with naive ones."""
    rnd = random.Random(seed)
    codes = [*CODES, "E0000", "P9999", *HOT_CODES * 20]
    zones: list[timezone | ZoneInfo | None] = [UTC, UTC, timezone(timedelta(hours=8)), ZoneInfo("Europe/Berlin")]
    if naive_times:
        zones.append(None)
    out = []
    for i in range(n):
        day = datetime(2024, 5, 1) + timedelta(days=rnd.randrange(14))
        local = day + timedelta(minutes=rnd.choice(EDGE_MINUTES), seconds=rnd.choice((0, 59)))
        at = local.replace(tzinfo=SHANGHAI).astimezone(UTC)
        zone = rnd.choice(zones)
        at = at.replace(tzinfo=None) if zone is None else at.astimezone(zone)
        sub = rnd.choice((*HONGKOU_SUBDISTRICTS, "310109017", "310109018"))
        kind = rnd.choice(("street", "residential", "village", "building"))
        cell = f"{sub}001{rnd.randrange(40):03d}"
        location = rnd.choice((None, Location(None, sub, "street", "g"), Location(cell, sub, kind, "g")))
        source = rnd.choice(("hotline", "patrol", "iot"))
        out.append(Event(f"{source}:e{i}", source, rnd.choice(codes), at, description=rnd.choice(TEXTS),
                         request_type=rnd.choice((None, "consult", "suggestion", "complaint", "help")),
                         sensor_type=rnd.choice((None, *SENSOR_TYPES)), value=rnd.choice(VALUES),
                         location=location, fault=rnd.choice(FAULTS) if faults else None))
    return out


def busy_history(events: list[Event]) -> RecurrenceHistory:
    """Every located event recorded three times, so `>= 3 earlier cases` holds for some and not for others."""
    history = RecurrenceHistory()
    for ev in events:
        if ev.location is not None and ev.location.cell is not None:
            for back in (0, 1, 40):
                history.record(ev.location.cell, ev.category, ev.occurred_at - timedelta(days=back))
    return history


def test_shipped_rules_agree_on_a_large_realistic_mix() -> None:
    """20,000 events of the benchmark's mix route the same way compiled, interpreted and naively."""
    events = generate_events(20_000, seed=2024)
    seen = check_all_agree(RULESET, NAIVE, events, month_of_history(events[:10_000]))
    assert len(seen) >= 30   # the mix reaches nearly every rule


def test_shipped_rules_agree_on_edge_events() -> None:
    """Edge events (see edge_events) route the same way, with a history and without one."""
    events = edge_events(6000, seed=4)
    # a source outside the prepared tables takes the slow path of the batch loop and must still agree
    events += [dataclasses.replace(ev, source="drone") for ev in events[:50]]  # type: ignore[arg-type]
    seen = check_all_agree(RULESET, NAIVE, events, busy_history(events[::3]))
    check_all_agree(RULESET, NAIVE, edge_events(3000, seed=6, naive_times=True), None)
    assert {"chronic-hotspot", "night-noise", "unlocated", "missing-manhole-cover", "street-lights-night",
            "shopfront-weekend-sichuan-north", "street-vendors-peak-hours", "device-fault", "default"} <= seen


def test_decisions_are_shared_and_immutable() -> None:
    """Events decided by the same rule get the same Decision object, and nobody can change it."""
    events = [ev for ev in generate_events(3000, seed=9) if ev.source == "patrol"]
    decisions = RULESET.decide_batch(events)
    by_rule: dict[str, Decision] = {}
    for d in decisions:
        assert by_rule.setdefault(d.rule_id, d) is d
    with pytest.raises(dataclasses.FrozenInstanceError):
        decisions[0].team = "enforcement"  # type: ignore[misc]


def test_dispatch_due_time_counts_from_now_when_given() -> None:
    """`now` moves the due time of every entry point alike; the decision itself does not change."""
    events = edge_events(300, seed=5, naive_times=True)
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    for ev, d in zip(events, RULESET.dispatch_batch(events, None, now), strict=True):
        assert d == reference(RULESET, ev, None, now) == RULESET.dispatch(ev, None, now)
        assert d.due_at == now + d.sla


# A ruleset built to hit what the optimisations introduced: reasons that depend on the branch (an `any` the
# compiler cannot split into variants: under `not`, and one with more combinations than it expands), two
# clock conditions in one rule sharing one conversion, a zone with daylight saving time, `located: true`,
# sub-district and cell conditions on events without a cell, and recurrence of a major class.
TRICKY = """\
- id: branchy
  order: 10
  when:
    any:
      - category: E0501
        any: [{keywords: [abc]}, {regex: "x+y"}, {not: {any: [{grid_kind: street}, {located: false}]}}]
      - {sensor_type: noise, value: [">= 50", "< 60"]}
      - {all: [{request_type: help}, {any: [{weekday: weekend}, {time: "00:00-01:00"}]}]}
  then: {team: enforcement, priority: 1, sla: 1h}
- id: many-combinations
  order: 20
  when:
    any: [{category: E0502}, {category: E0503}, {category: E0504}]
    all:
      - any: [{subdistrict: "310109009"}, {subdistrict: "310109010"}, {cell: "310109011*"}]
      - any: [{time: "08:00-12:00"}, {weekday: [sat, sun]}]
  then: {team: supervision, sla: 3h}
- id: night-and-weekday
  order: 30
  when: {time: ["23:00-02:30", "02:30-03:00"], weekday: mon-fri, located: true}
  then: {team: handling, sla: 30m, tags: [night]}
- id: class-recurrence
  order: 40
  when:
    source: [patrol, iot]
    recurrence: {category: same-class, within: 2d, count: ">= 2"}
  then: {team: supervision, priority: 2}
- id: not-in-cell
  order: 50
  when: {not: {cell: ["310109009001*", "310109010002003"]}, discovered_by: citizen}
  then: {team: handling, notify: [desk]}
"""


def test_tricky_ruleset_agrees_across_daylight_saving(tmp_path: Path) -> None:
    """Dynamic reasons, shared clock conversions, a DST zone and cell-less locations route the same way."""
    path = rules_file(tmp_path, TRICKY, header='version: "t2"\nkind: dispatch-rules\nname: tricky\n'
                      'timezone: Europe/Berlin\nteams:\n  enforcement: {sla: 24h}\n  handling: {sla: 48h}\n'
                      '  supervision: {sla: 72h}\n')
    ruleset, naive = load_ruleset(path), NaiveRuleset(path)
    rnd = random.Random(12)
    events = edge_events(3000, seed=13)
    # around the 2024 changes in Berlin (31 March, 27 October, 01:00 UTC) minute by minute
    for change in (datetime(2024, 3, 31, 1, tzinfo=UTC), datetime(2024, 10, 27, 1, tzinfo=UTC)):
        for minutes in range(-150, 150, 7):
            ev = rnd.choice(events)
            events.append(dataclasses.replace(ev, occurred_at=change + timedelta(minutes=minutes),
                                              category=rnd.choice(("E0501", "E0502", "E0503", "E0504"))))
    history = busy_history(events[::4])
    seen = check_all_agree(ruleset, naive, events, history)
    assert seen == {"branchy", "many-combinations", "night-and-weekday", "class-recurrence", "not-in-cell",
                    "default"}
    reasons = {d.reason for d in ruleset.decide_batch(events, history) if d.rule_id == "branchy"}
    assert len(reasons) >= 3   # one shared Decision per branch that can decide


@st.composite
def events(draw: st.DrawFn) -> Event:
    source = draw(st.sampled_from(("hotline", "patrol", "iot")))
    at = draw(st.datetimes(datetime(2023, 1, 1), datetime(2025, 12, 31),
                           timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), ZoneInfo("Asia/Shanghai")])))
    if draw(st.booleans()):
        at = at.astimezone(UTC)
    sub = draw(st.sampled_from(HONGKOU_SUBDISTRICTS))
    located = draw(st.sampled_from(("cell", "cell", "no-cell", "none")))
    location = (None if located == "none" else
                Location(f"{sub}001001" if located == "cell" else None, sub,
                         draw(st.sampled_from(("street", "residential", "village", "building"))), "g"))
    return Event(f"{source}:h", source, draw(st.sampled_from(CODES)), at,
                 description=draw(st.sampled_from(TEXTS) | st.text(max_size=12)),
                 request_type=draw(st.sampled_from((None, "consult", "suggestion", "complaint", "report"))),
                 sensor_type=draw(st.sampled_from((None, *SENSOR_TYPES))),
                 value=draw(st.sampled_from(VALUES) | st.floats(-1e3, 1e3)), location=location,
                 fault=draw(st.sampled_from(FAULTS)))


HISTORY = busy_history(edge_events(2000, seed=21))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=20))
def test_shipped_rules_agree_on_generated_events(batch: list[Event]) -> None:
    """Any generated batch routes the same way compiled, interpreted and naively."""
    check_all_agree(RULESET, NAIVE, batch, HISTORY)


# Rules for device faults among rules for problems: `fault` with conditions of every kind (source, category,
# sensor, place, time, text, `any` with a reason per branch, `not`), a problem rule with no condition on source
# or category before them (it must take no fault), and a problem catch-all (no `when`) at the end, so that a
# fault no `fault` rule takes goes to the default route and a problem never does.
FAULT_RULES = """\
- id: stuck-smoke
  order: 10
  when: {fault: stuck, sensor_type: smoke}
  then: {team: handling, priority: 2, sla: 4h, tags: [smoke]}
- id: problems-in-emergency-classes
  order: 20
  when: {any: [{category: E04*}, {sensor_type: [smoke, gas_concentration]}]}
  then: {team: handling, priority: 1, sla: 1h}
- id: silent-or-error-by-place
  order: 30
  when:
    fault: [silent, error]
    any: [{located: false}, {subdistrict: "310109017"}, {time: "22:00-06:00", weekday: weekend}]
  then: {team: supervision, priority: 3}
- id: faults-not-of-patrols
  order: 40
  when:
    fault: any
    not: {any: [{source: patrol}, {category: [E05*, P01*]}]}
    any: [{keywords: [噪音, noise]}, {value: ">= 20"}, {request_type: consult}]
  then: {team: enforcement, priority: 4, sla: 3d}
- id: hotline-faults
  order: 50
  when: {fault: [error], source: hotline}
  then: {team: enforcement, priority: 2}
- id: everything-else
  order: 60
  then: {team: handling, priority: 4, sla: 3d, tags: [catch-all]}
"""


def test_fault_rules_agree_and_keep_faults_and_problems_apart(tmp_path: Path) -> None:
    """Rules for faults among rules for problems route every fault and problem the same way on every path."""
    path = rules_file(tmp_path, FAULT_RULES)
    ruleset, naive = load_ruleset(path), NaiveRuleset(path)
    events = edge_events(6000, seed=31)
    # a fault that is not one of the three (bad input upstream) takes the slow path, and no `fault` rule
    events += [dataclasses.replace(ev, fault="gone") for ev in events[:40]]  # type: ignore[arg-type]
    history = busy_history(events[::3])
    seen = check_all_agree(ruleset, naive, events, history)
    assert seen == {r.id for r in ruleset.spec.rules} | {"default"}
    decisions = ruleset.decide_batch(events, history)
    by_id = {r.id: r for r in ruleset.spec.rules}
    for ev, d in zip(events, decisions, strict=True):
        rule = by_id.get(d.rule_id)
        if ev.fault is None:
            assert rule is not None and not rule.for_faults, ev  # the catch-all takes every problem left
        else:
            assert rule is None or rule.for_faults, ev
    reasons = {d.reason for d in decisions if d.rule_id == "faults-not-of-patrols"}
    assert len(reasons) == 3   # one shared Decision per branch of its `any`


def test_a_ruleset_without_fault_rules_sends_every_fault_to_the_default(tmp_path: Path) -> None:
    """Without a `fault` rule, every path routes every device fault by the default route."""
    path = rules_file(tmp_path, TRICKY)
    ruleset, naive = load_ruleset(path), NaiveRuleset(path)
    events = [ev for ev in edge_events(4000, seed=41) if ev.fault is not None]
    assert len(events) > 500
    check_all_agree(ruleset, naive, events, busy_history(events))
    assert {d.rule_id for d in ruleset.dispatch_batch(events, busy_history(events))} == {"default"}


class DoubleCounting(RecurrenceHistory):
    """A counter of its own (here: every case counts twice); the compiled rules must ask it, not the base."""

    def count(self, cell: str, category_pattern: str, window: timedelta, at: datetime) -> int:
        return 2 * super().count(cell, category_pattern, window, at)


def test_a_counter_of_its_own_is_asked_for_its_count() -> None:
    """A RecurrenceHistory subclass that counts differently decides recurrence rules by its own count."""
    events = edge_events(3000, seed=8, faults=False)  # a fault never goes to chronic-hotspot
    history = DoubleCounting()
    for ev in events[::5]:
        if ev.location is not None and ev.location.cell is not None:
            history.record(ev.location.cell, ev.category, ev.occurred_at)
    seen = check_all_agree(RULESET, NAIVE, events, history)
    assert "chronic-hotspot" in seen


def test_at_least_equals_counting() -> None:
    """RecurrenceHistory.at_least(..., n) is count(...) >= n, for exact codes, prefixes and any n."""
    rnd = random.Random(17)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    history = RecurrenceHistory()
    for _ in range(2000):
        history.record(f"c{rnd.randrange(5)}", rnd.choice(["E0501", "E0504", "E0102", "E05*"]),
                       start + timedelta(hours=rnd.randrange(24 * 40)))
    for _ in range(3000):
        cell, at = f"c{rnd.randrange(6)}", start + timedelta(hours=rnd.randrange(24 * 45))
        pattern, window = rnd.choice(["E0501", "E05*", "E*", "E0102", "X*", "E05*"]), timedelta(rnd.randrange(1, 40))
        n = rnd.randrange(-1, 40)
        assert history.at_least(cell, pattern, window, at, n) is (history.count(cell, pattern, window, at) >= n)


def test_generated_choosers_never_test_the_fault(tmp_path: Path) -> None:
    """The fault is settled by the table an event is looked up in: a `fault` rule with nothing else to test
    decides its faults without a chooser, and no problem's chooser ever carries a `fault` rule."""
    path = rules_file(tmp_path, FAULT_RULES)
    ruleset = load_ruleset(path)
    factory = ChooserFactory(ruleset.rules, ruleset.default, ruleset.version)
    for source in ("hotline", "patrol", "iot"):
        for code in ("E0402", "E0501", "P0101"):
            fault_rules = {r.rule_id for _, r in candidates(factory.steps, source, code, None) if r.rule.for_faults}
            assert fault_rules == set()
    only_faults = load_ruleset(rules_file(tmp_path, "- {id: f, order: 1, when: {fault: any}, then: {team: handling}}\n"
                                          "- {id: p, order: 2, then: {team: enforcement}}\n", name="f.yaml"))
    factory = ChooserFactory(only_faults.rules, only_faults.default, only_faults.version)
    for fault in ("stuck", "silent", "error"):
        chooser, decision = factory.entry("iot", "E0402", fault)
        assert chooser is None and decision.rule_id == "f"
    chooser, decision = factory.entry("iot", "E0402", None)
    assert chooser is None and decision.rule_id == "p"
