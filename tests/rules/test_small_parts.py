"""Durations, event files and the benchmark entry point."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.bench.rules import run_rules_bench
from rules.durations import format_duration, parse_duration
from rules.events import event_from_mapping


@given(st.integers(min_value=1, max_value=10 * 365 * 86400))
def test_duration_round_trip(seconds: int) -> None:
    """Any positive whole-second duration formats to text that parses back to itself."""
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("2h", 7200), ("1d12h", 129600), ("1w", 604800),
                                               ("1h 30m", 5400), ("45s", 45)])
def test_duration_examples(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["2", "2 hours", "h", "0m", "-1h", "1.5h", ""])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_event_file_shapes_are_equivalent() -> None:
    nested = event_from_mapping({"source": "patrol", "category": "E0501", "occurred_at": "2024-05-06T10:00:00Z",
                                 "location": {"cell": "c1", "subdistrict": "310109009", "grid_kind": "street",
                                              "grid_version": "manual"}})
    flat = event_from_mapping({"source": "patrol", "category": "E0501", "at": "2024-05-06T18:00:00+08:00",
                               "cell": "c1", "subdistrict": "310109009", "grid_kind": "street"})
    assert nested == flat


def test_event_files_carry_fault_and_scope() -> None:
    """A device-fault report's `fault` and a sensor's `scope` reach the Event; without them it is a problem."""
    base = {"source": "iot", "category": "E0402", "at": "2024-05-06T10:00:00Z"}
    ev = event_from_mapping({**base, "fault": "stuck", "scope": "area"})
    assert (ev.fault, ev.scope, ev.kind) == ("stuck", "area", "device_fault")
    assert (event_from_mapping(base).fault, event_from_mapping(base).kind) == (None, "problem")


@pytest.mark.parametrize(("data", "message"), [
    ({"source": "fax", "category": "E0501", "at": "2024-05-06T10:00:00Z"}, "source"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00"}, "no offset"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00Z", "value": "high"}, "value"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00Z", "colour": 1}, "unknown event key"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00Z", "grid_kind": "park"}, "grid_kind"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00Z", "fault": "broken"},
     "fault: 'broken' is not one of stuck, silent, error"),
    ({"source": "iot", "category": "E0501", "at": "2024-05-06T10:00:00Z", "scope": "street"}, "scope"),
])
def test_bad_event_files_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event_from_mapping(data)


def test_bench_entry_point_reports_both_engines() -> None:
    """`run_rules_bench` (used by `make bench`) returns rates for both engines and their ratio."""
    result = run_rules_bench(2000, runs=1, naive_events=300)
    assert result["events"] == 2000 and result["naive_events"] == 300
    assert float(result["compiled_events_per_s"]) > 0 and float(result["naive_events_per_s"]) > 0
    assert result["ratio"] == pytest.approx(
        float(result["compiled_slice_events_per_cpu_s"]) / float(result["naive_events_per_cpu_s"]))
    assert float(result["floor_events_per_cpu_s"]) > 0
