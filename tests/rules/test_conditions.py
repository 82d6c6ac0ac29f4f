"""Every condition and combinator, compiled, interpreted and naively, against events built to match or miss."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model.events import Event
from rules.compiled import compile_predicate
from rules.engine import Ruleset, load_ruleset
from rules.naive import NaiveRuleset
from rules.recurrence import RecurrenceHistory
from tests.rules.factories import AT, event, rules_file

RULE = """\
- id: r
  order: 1
  when: {when}
  then: {{team: enforcement}}
"""


def matches(tmp: Path, when: str, ev: Event, history: RecurrenceHistory | None = None) -> bool:
    """Dispatch `ev` through a one-rule ruleset and check compiled, interpreted, explained and naive agree."""
    path = rules_file(tmp, RULE.format(when=when))
    ruleset = load_ruleset(path)
    compiled = ruleset.dispatch(ev, history).rule_id == "r"
    rule = ruleset.spec.rules[0]
    assert rule.matches(ev, history) is compiled
    # the condition alone, compiled and walked, agree (the rule's kind is the rule's business, not its `when`'s)
    assert compile_predicate("p", rule.when)(ev, history) is rule.when.test(ev, history)
    assert ruleset.explain(ev, history).rules[0].matched is compiled
    assert (NaiveRuleset(path).dispatch(ev, history).rule_id == "r") is compiled
    return compiled


def local(hh: int, mm: int = 0, day: int = 6) -> datetime:
    """2024-05-<day> hh:mm in Shanghai, as UTC (Shanghai is UTC+8, no DST since 1991)."""
    return datetime(2024, 5, day, hh, mm, tzinfo=UTC) - timedelta(hours=8)


@pytest.mark.parametrize(("when", "ev", "expected"), [
    ("{source: hotline}", event(source="hotline"), True),
    ("{source: [hotline, iot]}", event(source="patrol"), False),
    ("{discovered_by: sensor}", event(source="iot"), True),
    ("{discovered_by: [citizen, patrol]}", event(source="iot"), False),
    ("{category: E0501}", event(category="E0501"), True),
    ("{category: E05*}", event(category="E0599"), True),
    ("{category: [E01*, P0101]}", event(category="E0501"), False),
    ("{category: P*}", event(category="P0407"), True),
    ("{subdistrict: '310109009'}", event(), True),
    ("{subdistrict: 310109018}", event(), False),
    ("{subdistrict: 310109009}", event(located=False), False),
    ("{grid_kind: [residential, building]}", event(grid_kind="building"), True),
    ("{grid_kind: street}", event(grid_kind="village"), False),
    ("{cell: '310109009001001'}", event(), True),
    ("{cell: '310109009001*'}", event(cell="310109009001777"), True),
    ("{cell: '310109009002*'}", event(), False),
    ("{cell: '310109009001*'}", event(cell=None), False),
    ("{located: true}", event(), True),
    ("{located: false}", event(cell=None), True),
    ("{located: false}", event(located=False), True),
    ("{located: false}", event(), False),
    ("{request_type: complaint}", event(source="hotline", request_type="complaint"), True),
    ("{request_type: [consult, help]}", event(source="hotline", request_type="complaint"), False),
    ("{request_type: consult}", event(source="patrol"), False),
    ("{keywords: [噪音, Noise]}", event(description="楼下NOISE很大"), True),
    ("{keywords: [噪音]}", event(description="垃圾"), False),
    ("{regex: '井盖.{0,4}丢失'}", event(description="污水井盖被人丢失了"), True),
    ("{regex: '井盖.{0,4}丢失'}", event(description="井盖丢了"), False),
    ("{sensor_type: [gas, smoke]}", event(source="iot", sensor_type="smoke", value=1.0), True),
    ("{sensor_type: gas}", event(source="iot", sensor_type="noise", value=1.0), False),
    ("{value: '>= 20'}", event(source="iot", value=20.0), True),
    ("{value: '> 20'}", event(source="iot", value=20.0), False),
    ("{value: ['>= 10', '< 20']}", event(source="iot", value=15.5), True),
    ("{value: ['>= 10', '< 20']}", event(source="iot", value=20.0), False),
    ("{value: 3}", event(source="iot", value=3.0), True),
    ("{value: '!= 3'}", event(source="iot", value=None), False),
    ("{time: '22:00-06:00'}", event(at=local(23, 59)), True),
    ("{time: '22:00-06:00'}", event(at=local(5, 59)), True),
    ("{time: '22:00-06:00'}", event(at=local(6, 0)), False),
    ("{time: ['07:00-09:30', '17:00-21:00']}", event(at=local(9, 29)), True),
    ("{time: ['07:00-09:30', '17:00-21:00']}", event(at=local(12)), False),
    ("{time: '12:00-24:00'}", event(at=local(23, 59)), True),
    ("{weekday: weekend}", event(at=local(10, day=11)), True),
    ("{weekday: mon-fri}", event(at=local(10, day=11)), False),
    ("{weekday: fri-mon}", event(at=local(10, day=6)), True),
    ("{weekday: [tue, wed]}", event(at=local(1, day=7)), True),
    ("{weekday: tue}", event(at=datetime(2024, 5, 6, 16, 30, tzinfo=UTC)), True),
    ("{all: [{source: patrol}, {category: E0501}]}", event(), True),
    ("{all: [{source: patrol}, {category: E0502}]}", event(), False),
    ("{any: [{source: iot}, {category: E0501}]}", event(), True),
    ("{any: [{source: iot}, {category: E0502}]}", event(), False),
    ("{not: {source: iot}}", event(), True),
    ("{not: {any: [{source: patrol}, {located: false}]}}", event(), False),
    ("{source: patrol, not: {time: '22:00-06:00'}, any: [{grid_kind: street}, {keywords: [x]}]}", event(), True),
])
def test_condition(tmp_path: Path, when: str, ev: Event, expected: bool) -> None:
    """Each condition matches exactly the events it describes (weekday and time read Shanghai time)."""
    assert matches(tmp_path, when, ev) is expected


def fault(kind: str | None, **fields: object) -> Event:
    """A sensor's report: a device fault of `kind`, or (None) a problem."""
    return event(source="iot", category=str(fields.pop("category", "E0499")), fault=kind, **fields)


@pytest.mark.parametrize(("when", "ev", "expected"), [
    ("{fault: stuck}", fault("stuck"), True),
    ("{fault: [stuck, silent]}", fault("error"), False),
    ("{fault: [stuck, silent]}", fault("silent"), True),
    ("{fault: any}", fault("error"), True),
    ("{fault: [any]}", fault("silent"), True),
    ("{fault: error, sensor_type: pipe_pressure, value: '< 0'}", fault("error", sensor_type="pipe_pressure",
                                                                         value=-1.0), True),
    ("{fault: error, sensor_type: pipe_pressure}", fault("error", sensor_type="smoke"), False),
    ("{fault: any, any: [{located: false}, {category: E04*}]}", fault("stuck", category="E0402"), True),
    ("{fault: any, not: {category: E04*}}", fault("stuck", category="E0402"), False),
    # a rule naming `fault` never takes a problem
    ("{fault: any}", fault(None), False),
    ("{fault: any, not: {source: patrol}}", fault(None), False),
    # a rule not naming `fault` never takes a device fault, whatever else holds
    ("{source: iot}", fault("stuck"), False),
    ("{source: iot}", fault(None), True),
    ("{sensor_type: smoke}", fault("error", sensor_type="smoke"), False),
    ("{not: {source: patrol}}", fault("silent"), False),
    ("{any: [{located: true}, {located: false}]}", fault("silent"), False),
    ("{any: [{located: true}, {located: false}]}", fault(None), True),
])
def test_fault_condition(tmp_path: Path, when: str, ev: Event, expected: bool) -> None:
    """`fault` matches device faults of the kinds it names, and only rules naming it match a device fault."""
    assert matches(tmp_path, when, ev) is expected


def test_a_rule_without_when_takes_every_problem_but_no_fault(tmp_path: Path) -> None:
    """A catch-all rule (no `when`) leaves device faults to the default route, with an explain line saying so."""
    path = rules_file(tmp_path, "- {id: everything, order: 1, then: {team: enforcement}}\n")
    ruleset, naive = load_ruleset(path), NaiveRuleset(path)
    for ev in (event(), fault(None)):
        assert ruleset.dispatch(ev).rule_id == naive.dispatch(ev).rule_id == "everything"
    for kind in ("stuck", "silent", "error"):
        ev = fault(kind)
        assert ruleset.dispatch(ev).rule_id == naive.dispatch(ev).rule_id == "default"
        assert ruleset.decide_batch([ev])[0] is ruleset.default.decision
        (trace, _) = ruleset.explain(ev).rules
        assert (trace.candidate, trace.matched, trace.chosen) == (False, False, False)
        assert trace.lines == (f"[ ] a problem (rules without `fault` never route device faults)   "
                               f"(event: fault={kind})", "[x] always")


def test_recurrence_counts_real_history(tmp_path: Path) -> None:
    """`>= 3 in 30 days` matches with the third earlier case inside the window, not before, not outside it."""
    when = "{recurrence: {within: 30d, count: '>= 3'}}"
    ev = event(category="E0501")
    history = RecurrenceHistory()
    cell = "310109009001001"
    history.record(cell, "E0501", AT - timedelta(days=31))        # too old
    history.record("310109009001002", "E0501", AT - timedelta(days=1))  # other cell
    history.record(cell, "E0502", AT - timedelta(days=1))         # other category
    history.record(cell, "E0501", AT - timedelta(days=30))        # exactly at the window's start: counts
    history.record(cell, "E0501", AT - timedelta(days=3))
    assert not matches(tmp_path, when, ev, history)
    history.record(cell, "E0501", AT)                            # at the event's time: counts
    assert matches(tmp_path, when, ev, history)
    assert not matches(tmp_path, when, event(category="E0501", cell=None), history)
    assert not matches(tmp_path, when, ev, None)


def test_recurrence_same_class_and_explicit_prefix(tmp_path: Path) -> None:
    history = RecurrenceHistory()
    for code in ("E0501", "E0504", "E0599"):
        history.record("310109009001001", code, AT - timedelta(hours=5))
    ev = event(category="E0510")
    assert matches(tmp_path, "{recurrence: {category: same-class, within: 1d, count: 3}}", ev, history)
    assert matches(tmp_path, "{recurrence: {category: E05*, within: 1d, count: '== 3'}}", ev, history)
    assert not matches(tmp_path, "{recurrence: {category: same, within: 1d, count: '>= 1'}}", ev, history)
    assert not matches(tmp_path, "{recurrence: {category: same-class, within: 4h, count: '>= 1'}}", ev, history)


_texts = st.sampled_from(["", "噪音", "井盖丢失", "x", "NOISE at night"])
_events = st.builds(
    event,
    source=st.sampled_from(["hotline", "patrol", "iot"]),
    category=st.sampled_from(["E0501", "E0508", "E0102", "P0101", "E0403", "E0301"]),
    at=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31), timezones=st.just(UTC)),
    cell=st.sampled_from(["310109009001001", "310109018002003", None]),
    grid_kind=st.sampled_from(["street", "residential", "building", None]),
    located=st.booleans(),
    description=_texts,
    value=st.one_of(st.none(), st.floats(min_value=-50, max_value=150)),
    request_type=st.sampled_from([None, "complaint", "consult"]),
    fault=st.sampled_from([None, None, "stuck", "silent", "error"]),
)


@functools.cache
def shipped() -> Ruleset:
    return load_ruleset()


@settings(max_examples=200, deadline=None)
@given(ev=_events)
def test_shipped_rules_compiled_equals_interpreted(ev: Event) -> None:
    """For any event, the compiled dispatch picks the first rule whose `when` tree evaluates true."""
    ruleset = shipped()
    history = RecurrenceHistory()
    if ev.location and ev.location.cell:
        for days in (1, 2, 3):
            history.record(ev.location.cell, ev.category, ev.occurred_at - timedelta(days=days))
    expected = next((r.id for r in ruleset.spec.rules if r.matches(ev, history)), "default")
    assert ruleset.dispatch(ev, history).rule_id == expected
    chosen = [t.rule_id for t in ruleset.explain(ev, history).rules if t.chosen]
    assert chosen == [expected]
