"""Events written by hand, for `cityops rules explain EVENT.json` and the rule-test files.

Two shapes are accepted: the `pipeline.model.events.Event` fields as JSON (`occurred_at`, and `location` as an object
with `cell`, `subdistrict`, `grid_kind`, `grid_version`, `snapped`), or the short form of rule tests with `at`
for `occurred_at` and `cell`, `subdistrict`, `grid_kind` at the top. Times need an offset (`+08:00` or `Z`).
A device-fault report has `fault` (stuck, silent or error); a sensor's alarm may say its `scope` (person,
device or area).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline.model.events import DEVICE_FAULTS, SENSOR_SCOPES, Event, Location
from pipeline.model.sources import SOURCES
from rules.leaves import GRID_KINDS as GRID_KINDS_ALL

_EVENT_KEYS = {
    "event_id",
    "source",
    "category",
    "occurred_at",
    "at",
    "lon",
    "lat",
    "address",
    "description",
    "request_type",
    "channel",
    "team",
    "actor",
    "sensor_id",
    "sensor_type",
    "value",
    "caller_hash",
    "location",
    "cell",
    "subdistrict",
    "grid_kind",
    "grid_version",
    "snapped",
    "scope",
    "fault",
}
_LOCATION_KEYS = {"cell", "subdistrict", "grid_kind", "grid_version", "snapped"}


def parse_time(text: str) -> datetime:
    """ISO 8601 with an offset; raise ValueError for a naive time (its zone would be a guess)."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset; write e.g. 2024-05-06T22:30:00+08:00")
    return at


def event_from_mapping(data: Mapping[str, Any]) -> Event:
    """Build an Event; raise ValueError naming the first wrong key."""
    unknown = sorted(set(data) - _EVENT_KEYS)
    if unknown:
        raise ValueError(f"unknown event key(s): {', '.join(unknown)}")
    for key in ("source", "category"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{key}: required text")
    if data["source"] not in SOURCES:
        raise ValueError(f"source: {data['source']!r} is not one of {', '.join(SOURCES)}")
    when = data.get("occurred_at", data.get("at"))
    if not isinstance(when, str):
        raise ValueError("occurred_at (or at): required ISO 8601 time with offset")
    location = _location(data)
    value = data.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"value: expected a number, got {value!r}")
    text_keys = (
        "address",
        "request_type",
        "channel",
        "team",
        "actor",
        "sensor_id",
        "sensor_type",
        "caller_hash",
    )
    for key in (*text_keys, "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{key}: expected text, got {data[key]!r}")
    for key, choices in (("scope", SENSOR_SCOPES), ("fault", DEVICE_FAULTS)):
        if data.get(key) is not None and data[key] not in choices:
            raise ValueError(f"{key}: {data[key]!r} is not one of {', '.join(choices)}")
    return Event(
        event_id=str(data.get("event_id", f"{data['source']}:manual")),
        source=data["source"],
        category=data["category"],
        occurred_at=parse_time(when),
        lon=_float(data, "lon"),
        lat=_float(data, "lat"),
        description=data.get("description") or "",
        value=None if value is None else float(value),
        location=location,
        scope=data.get("scope"),
        fault=data.get("fault"),
        **{k: data.get(k) for k in text_keys},
    )


def _location(data: Mapping[str, Any]) -> Location | None:
    nested = data.get("location")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ValueError("location: expected an object")
        unknown = sorted(set(nested) - _LOCATION_KEYS)
        if unknown:
            raise ValueError(f"location: unknown key(s): {', '.join(unknown)}")
        fields: Mapping[str, Any] = nested
    elif any(k in data for k in ("cell", "subdistrict", "grid_kind")):
        fields = data
    else:
        return None
    kind = fields.get("grid_kind")
    if kind is not None and kind not in GRID_KINDS_ALL:
        raise ValueError(f"grid_kind: {kind!r} is not one of {', '.join(GRID_KINDS_ALL)}")
    for key in ("cell", "subdistrict", "grid_version"):
        if fields.get(key) is not None and not isinstance(fields[key], str | int):
            raise ValueError(f"{key}: expected text, got {fields[key]!r}")
    cell, sub = fields.get("cell"), fields.get("subdistrict")
    return Location(
        cell=None if cell is None else str(cell),
        subdistrict=None if sub is None else str(sub),
        grid_kind=kind,
        grid_version=str(fields.get("grid_version", "manual")),
        snapped=bool(fields.get("snapped", False)),
    )


def _float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)
