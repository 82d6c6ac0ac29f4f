"""The one event model that the three sources are normalized into, and what later stages add to it.

An `Event` is immutable; stages return new values (`dataclasses.replace`) rather than mutating, so a batch can
be retried safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar, dataclass_transform

from pipeline.model.sources import DISCOVERED_BY, DiscoveredBy, Source

T = TypeVar("T")

Team = Literal["enforcement", "handling", "supervision"]
GridKind = Literal["street", "residential", "village", "building"]
SensorScope = Literal["person", "device", "area"]
DeviceFault = Literal["stuck", "silent", "error"]
CaseKind = Literal["problem", "device_fault"]


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """A frozen dataclass with slots, as the type checker sees it (assigning a field is an error there).

    At run time it is a plain slotted dataclass, hashable by its fields like a frozen one: a frozen dataclass's
    `__init__` sets each field through `object.__setattr__`, about 6x slower, and the worker builds several of
    these per report (an event, its rows, an assignment). Nothing in cityops assigns to one: `mypy --strict`
    checks that, and stages make changed copies with `dataclasses.replace`."""
    make: Callable[[type[T]], type[T]] = dataclass(slots=True, unsafe_hash=True)
    return make(cls)


SENSOR_SCOPES: tuple[SensorScope, ...] = ("person", "device", "area")
DEVICE_FAULTS: tuple[DeviceFault, ...] = ("stuck", "silent", "error")
TEAMS: tuple[Team, ...] = ("enforcement", "handling", "supervision")


@record
class Location:
    """Where the grid put an event. `cell` is None when the point is outside every cell."""

    cell: str | None
    subdistrict: str | None
    grid_kind: GridKind | None
    grid_version: str
    snapped: bool = False


@record
class Event:
    """One report of a problem, from any source, after decoding and validation.

    `event_id` is stable: `<source>:<source id>` (ticket number, patrol report id, or sensor id + measurement
    time), so a replayed message maps to the same event.
    """

    event_id: str
    source: Source
    category: str
    occurred_at: datetime              # when the citizen called / patrol observed / sensor measured (UTC)
    lon: float | None = None           # WGS84; None for a hotline ticket with only an address
    lat: float | None = None
    address: str | None = None
    description: str = ""
    request_type: str | None = None    # hotline: consult, help, complaint, report, suggestion
    channel: str | None = None         # hotline: phone, app, web, wechat
    team: str | None = None            # patrol: the reporting patrol team
    actor: str | None = None           # patrol: inspector id; never a citizen's name
    sensor_id: str | None = None
    sensor_type: str | None = None
    value: float | None = None
    caller_hash: str | None = None     # hotline: keyed hash of the caller's phone, never the phone itself
    location: Location | None = None
    # iot: who or what a sensor's alarm is about (docs/cases.md §2): "person" (one resident), "device" (one
    # object: a cover, a bin, a kitchen) or "area" (a phenomenon of the place); None for citizens and patrols
    scope: SensorScope | None = None
    fault: DeviceFault | None = None   # iot: set on a device-fault report (§6.3), never on a problem
    # hotline (Open311 fields, README "Open311"): a link to the caller's photo or video (http/https), the id of
    # the address in an address register, and the answers to the service's attributes as canonical JSON text
    # (an object, keys sorted; None when there are none)
    media_url: str | None = None
    address_id: str | None = None
    attributes: str | None = None

    @property
    def kind(self) -> CaseKind:
        return "problem" if self.fault is None else "device_fault"

    @property
    def discovered_by(self) -> DiscoveredBy:
        return DISCOVERED_BY[self.source]


@record
class CaseUpdate:
    """A team's report back on a case (`cityops.case-updates`)."""

    update_id: str
    case_id: str
    action: str
    team: str
    actor: str
    at: datetime
    note: str = ""
    until: datetime | None = None      # extend: the new handling deadline (docs/cases.md §4.6)
    photo_url: str = ""     # resolve: the "after" photo (README "Photos"); "" when none
