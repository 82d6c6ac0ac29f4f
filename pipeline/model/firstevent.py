"""A case's first report, kept with the case: the rules decide on it again when the case is rerouted or sent back
for rework (pipeline.stages.lifecycle).

It was a dict of 15 keys: 656 bytes of hash table a case, out of Python's small-object arenas, on the C heap,
the largest part of a decoded case (issue #23: a month's 65,499 cases measured 722 bytes a case for it, 2,416 for
the whole case). `FirstEvent` is a slotted msgspec struct without a GC header (about 140 bytes); its place
(`location`) is one shared tuple per place. The changelog keeps the dict's JSON: the same keys in the same
order, so records written before and after read alike.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from pipeline.model.events import Event, Location

_LOCATIONS: dict[tuple[Any, ...], tuple[Any, ...]] = {}     # one tuple per (cell, subdistrict, kind, version, snapped)


class FirstEvent(msgspec.Struct, gc=False):
    event_id: str
    source: str
    category: str
    occurred_at: float                  # POSIX seconds
    lon: float | None = None
    lat: float | None = None
    description: str | None = None
    request_type: str | None = None
    channel: str | None = None
    sensor_id: str | None = None
    sensor_type: str | None = None
    value: float | None = None
    scope: str | None = None
    fault: str | None = None
    location: tuple[Any, ...] | None = None     # [cell, subdistrict, grid kind, grid version, snapped]


def _place(loc: Any) -> tuple[Any, ...] | None:
    if loc is None:
        return None
    key = tuple(sys.intern(v) if type(v) is str else v for v in loc)
    if len(_LOCATIONS) >= 200_000:
        _LOCATIONS.clear()
    return _LOCATIONS.setdefault(key, key)


def first_event(event: Event) -> FirstEvent:
    """The case's record of its first report `event`."""
    loc = event.location
    return shared(FirstEvent(
        event.event_id, event.source, event.category, event.occurred_at.timestamp(), event.lon, event.lat,
        event.description, event.request_type, event.channel, event.sensor_id, event.sensor_type, event.value,
        event.scope, event.fault,
        None if loc is None else (loc.cell, loc.subdistrict, loc.grid_kind, loc.grid_version, loc.snapped)))


def event_of(first: FirstEvent | None) -> Event:
    """The report again, as the rules take it."""
    if first is None:
        raise ValueError("a case without its first report")
    loc = first.location
    source, scope, fault = cast(Any, first.source), cast(Any, first.scope), cast(Any, first.fault)  # as read
    return Event(
        event_id=first.event_id, source=source, category=first.category,
        occurred_at=datetime.fromtimestamp(first.occurred_at, UTC), lon=first.lon, lat=first.lat,
        description=first.description or "", request_type=first.request_type, channel=first.channel,
        sensor_id=first.sensor_id, sensor_type=first.sensor_type, value=first.value, scope=scope, fault=fault,
        location=None if loc is None else Location(cell=loc[0], subdistrict=loc[1], grid_kind=loc[2],
                                                   grid_version=loc[3], snapped=bool(loc[4])),
    )


def shared(first: FirstEvent) -> FirstEvent:
    """`first` with its repeated strings interned and its place the shared tuple of that place."""
    intern = sys.intern
    first.source, first.category = intern(first.source), intern(first.category)
    for k in ("request_type", "channel", "sensor_type", "scope", "fault"):
        v = getattr(first, k)
        if v:
            setattr(first, k, intern(v))
    first.location = _place(first.location)
    return first


def first_as_dict(first: FirstEvent | None) -> dict[str, Any]:
    """The record's JSON object (`{}` for none), its keys in the order the dict always had."""
    if first is None:
        return {}
    return msgspec.structs.asdict(first)      # (orjson writes the place's tuple as the list it was)


def first_from_dict(d: dict[str, Any] | None) -> FirstEvent | None:
    """A record's first report from its JSON object, laxly (`{}` or none: none); unknown keys are dropped."""
    if not d:
        return None
    return shared(msgspec.convert(d, FirstEvent, strict=False))
