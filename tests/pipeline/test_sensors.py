"""Sensor alarms: hysteresis and debounce so a flapping sensor opens one problem; the registry is validated."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.stages.decode import default_decoder
from pipeline.stages.registry import RegistryError, load_registry, load_types
from pipeline.stages.sensors import SensorState, observe
from tests.pipeline.factories import T0, raw, reading

REGISTRY = "sensor_id,sensor_type,lon,lat,category,alarm,clear,debounce\n"


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "sensors.csv"
    p.write_text(REGISTRY + body, encoding="utf-8")
    return p


def readings(values: list[float], sensor: str = "S-1") -> list:  # type: ignore[type-arg]
    d = default_decoder()
    return [d.iot(raw(reading(sensor, v, at=T0 + timedelta(minutes=i)))) for i, v in enumerate(values)]


def test_flapping_sensor_opens_one_problem(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, "S-1,manhole_tilt,121.49,31.265,,,,\n"))
    state = SensorState()
    # tilt threshold 15 deg, clear below 5, debounce 2
    values = [1, 16, 3, 16, 17, 14, 16, 12, 16, 18, 4, 2, 16, 17]
    obs = [observe(state, r, reg.get("S-1")) for r in readings(values)]
    problems = [i for i, o in enumerate(obs) if o.problem]
    clears = [i for i, o in enumerate(obs) if o.cleared]
    assert problems == [4, 13]      # two consecutive readings >= 15 (index 3,4), then again after clearing
    assert clears == [10]           # only back below 5 clears; 14 and 12 are inside the hysteresis band
    p = obs[4].problem
    assert p is not None and p.category == "P0101" and p.event_id == "iot:S-1:alarm1"
    assert (p.lon, p.lat) == (121.49, 31.265)


def test_replayed_readings_are_not_applied_twice(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, "S-1,manhole_tilt,121.49,31.265,,,,\n"))
    state = SensorState()
    rs = readings([16, 16, 16])
    first = [observe(state, r, reg.get("S-1")) for r in rs]
    again = [observe(state, r, reg.get("S-1")) for r in rs]
    assert sum(o.problem is not None for o in first) == 1
    assert not any(o.applied for o in again) and state.late == 3


def test_below_direction_and_per_sensor_overrides(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, "P-1,pipe_pressure,121.49,31.265,,0.2,0.3,1\n"))
    s = reg.get("P-1")
    assert s is not None and s.threshold.alarm == 0.2 and s.threshold.direction == "below"
    state = SensorState()
    obs = [observe(state, r, s) for r in readings([0.35, 0.19], "P-1")]
    assert obs[1].problem is not None and obs[1].problem.category == "E0402"


def test_unknown_sensor_is_aggregated_without_problems() -> None:
    state = SensorState()
    obs = [observe(state, r, None) for r in readings([99, 99, 99])]
    assert all(o.applied and o.problem is None for o in obs) and state.minute_readings == 1


@pytest.mark.parametrize(("row", "expected"), [
    ("S-1,manhole_tilt,121.49,31.265,,,,\nS-1,smoke,121.49,31.265,,,,\n", ":3:1: sensor_id: duplicate sensor id"),
    ("S-2,teleporter,121.49,31.265,,,,\n", ":2:2: sensor_type: unknown sensor type 'teleporter'"),
    ("S-3,smoke,east,31.265,,,,\n", ":2:3: lon: lon/lat must be numbers"),
    ("S-4,smoke,121.49,131.2,,,,\n", ":2:4: lat: position out of range"),
    ("S-5,smoke,121.49,31.265,X0101,,,\n", ":2:5: category: unknown category code 'X0101'"),
    ("S-6,smoke,121.49,31.265,,5,10,\n", "clear: 10.0 must be on the normal side of alarm 5.0"),
    ("S-7,smoke,121.49\n", ":2:1: (row): 3 columns"),
])
def test_bad_registry_rows_are_named(tmp_path: Path, row: str, expected: str) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, row))
    assert expected in str(info.value)


def test_default_types_load_and_use_real_categories() -> None:
    types = load_types()
    assert {"manhole_tilt", "water_level", "smoke", "elderly_button", "noise"} <= set(types)
    assert types["water_level"].category == "E0406"


def test_registry_holder_swaps_a_valid_file_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    import os

    from pipeline.stages.registry import RegistryHolder

    path = write(tmp_path, "S-1,manhole_tilt,121.49,31.265,,,,\n")
    holder = RegistryHolder(path)
    assert set(holder.current.sensors) == {"S-1"}
    path.write_text(REGISTRY + "S-1,manhole_tilt,121.49,31.265,,,,\nS-2,smoke,121.48,31.26,,,,\n", encoding="utf-8")
    os.utime(path, ns=(1, 10**18))
    assert holder.maybe_reload() and set(holder.current.sensors) == {"S-1", "S-2"}
    path.write_text(REGISTRY + "S-3,teleporter,121.49,31.265,,,,\n", encoding="utf-8")
    os.utime(path, ns=(1, 2 * 10**18))
    assert not holder.maybe_reload()
    assert set(holder.current.sensors) == {"S-1", "S-2"} and holder.refusals == 1
    assert holder.last_error and "unknown sensor type 'teleporter'" in holder.last_error


def test_a_restored_state_is_the_state_that_was_stored_whatever_its_version() -> None:
    """The changelog's sensor states decode typed (the restore's fast path) to exactly what `from_dict` makes of
    them: this version's states, an older version's without `alarm_at` (its alarm counts from the last reading),
    a state with no reading this minute (`minute_max` null), one with fields of a newer version."""
    import math

    import orjson

    from pipeline.runtime.ingest import _decode_state, _encode_state

    states = [SensorState(), SensorState(alarm=True, streak=3, last_at=1.7e9 + 0.25, last_value=-2.5, alarms=7,
                                         minute=1.7e9, minute_readings=4, minute_max=12.75, late=2,
                                         extra={"k": [1, "x"]}, alarm_at=1.6e9, errors=1, repeats=5,
                                         same_since=1.5e9, fault="stuck", faults=2, fault_kind="stuck",
                                         fault_at=1.55e9, fault_value=3.0)]
    for state in states:
        raw = _encode_state(state)
        assert _decode_state(raw) == SensorState.from_dict(orjson.loads(raw)) == state
    old = {"alarm": True, "streak": 0, "last_at": 1.7e9, "last_value": 9.0, "alarms": 1, "minute": 1.7e9,
           "minute_readings": 1, "minute_max": 9.0, "late": 0, "extra": {}}
    restored = _decode_state(orjson.dumps(old))
    assert restored.alarm_at == 1.7e9 and restored == SensorState.from_dict(dict(old))
    empty = {**SensorState(last_at=5.0).to_dict(), "minute_max": None}
    assert _decode_state(orjson.dumps(empty)).minute_max == -math.inf
    newer = {**states[1].to_dict(), "battery": 0.5}
    assert _decode_state(orjson.dumps(newer)) == states[1]
