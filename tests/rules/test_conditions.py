"""Every condition and combinator, compiled and interpreted, against events built to match or miss."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import Event
from rules.compiled import compile_predicate
from rules.engine import Ruleset, load_ruleset
from rules.recurrence import RecurrenceHistory
from tests.rules.factories import AT, event, rules_file

RULE = """\
- id: r
  order: 1
  when: {when}
  then: {{team: enforcement}}
"""


def matches(tmp: Path, when: str, ev: Event, history: RecurrenceHistory | None = None) -> bool:
    """Dispatch `ev` through a one-rule ruleset and check compiled, interpreted and explained agree."""
    ruleset = load_ruleset(rules_file(tmp, RULE.format(when=when)))
    compiled = ruleset.dispatch(ev, history).rule_id == "r"
    rule = ruleset.spec.rules[0]
    assert rule.when.test(ev, history) is compiled
    assert compile_predicate("p", rule.when)(ev, history) is compiled
    assert ruleset.explain(ev, history).rules[0].matched is compiled
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
    expected = next((r.id for r in ruleset.spec.rules if r.when.test(ev, history)), "default")
    assert ruleset.dispatch(ev, history).rule_id == expected
    chosen = [t.rule_id for t in ruleset.explain(ev, history).rules if t.chosen]
    assert chosen == [expected]
