"""Factories for test inputs: raw messages in the CONTRACTS formats, and fakes of the grid and the rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from pipeline.model.events import Event

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat()


def hotline(ticket: str = "HK-1", *, at: datetime = T0, code: str = "E0501", lon: float | None = 121.4905,
            lat: float | None = 31.2650, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"service_request_id": ticket, "requested_datetime": iso(at), "service_code": code,
                           "description": "有人在路口摆摊", "request_type": "complaint", "channel": "phone",
                           "caller": {"name": "王小明", "phone": "13912345678"}}
    if lon is not None and lat is not None:
        msg["long"], msg["lat"] = lon, lat
    msg.update(extra)
    return msg


def patrol(report: str = "PR-1", *, at: datetime = T0, code: str = "E0501", lon: float = 121.4905,
           lat: float = 31.2650, **extra: Any) -> dict[str, Any]:
    msg = {"report_id": report, "observed_at": iso(at), "team": "patrol-ouyang", "inspector": "P0042",
           "category": code, "lat": lat, "lon": lon}
    msg.update(extra)
    return msg


def reading(sensor: str = "S-1", value: float = 1.0, *, at: datetime = T0, sensor_type: str = "manhole_tilt",
            **extra: Any) -> dict[str, Any]:
    msg = {"sensor_id": sensor, "sensor_type": sensor_type, "value": value, "measured_at": iso(at)}
    msg.update(extra)
    return msg


def update(case_id: str, action: str, team: str, *, at: datetime = T0 + timedelta(hours=1),
           actor: str = "u1", note: str | None = None) -> dict[str, Any]:
    msg = {"case_id": case_id, "action": action, "team": team, "actor": actor, "at": iso(at)}
    if note is not None:
        msg["note"] = note
    return msg


def raw(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


@dataclass(frozen=True)
class FakeDispatch:
    team: str
    priority: int = 3
    sla: timedelta = timedelta(hours=4)
    escalate_to: str | None = "supervision"
    notify: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    rule_id: str = "fake"
    reason: str = "fake rule"
    ruleset_version: str = "test-1"


class FakeRouter:
    """Routes E0* events to enforcement, everything else to handling (a stand-in for the rules engine)."""

    def __init__(self) -> None:
        self.calls: list[Event] = []

    def dispatch(self, event: Event, recurrence: Any) -> FakeDispatch:
        self.calls.append(event)
        team = "enforcement" if event.category.startswith("E05") else "handling"
        return FakeDispatch(team=team, rule_id=f"to-{team}", reason=f"category {event.category}")

    def decide(self, event: Event, recurrence: Any) -> FakeDispatch:
        return self.dispatch(event, recurrence)


@dataclass
class FakeLocateResult:
    cell: list[str | None]
    subdistrict: list[str | None]
    grid_kind: list[str | None]
    snapped: list[bool]
    error: list[str | None]


class FakeGrid:
    """A 0.01-degree lattice: cell code from the rounded position (a stand-in for grid.index)."""

    version = "fake-grid-1"

    def locate_batch(self, lons: Any, lats: Any) -> FakeLocateResult:
        cells: list[str | None] = []
        errors: list[str | None] = []
        for lon, lat in zip(np.asarray(lons), np.asarray(lats), strict=True):
            if not (np.isfinite(lon) and np.isfinite(lat)) or not (-90 <= lat <= 90):
                cells.append(None)
                errors.append("coordinates are not finite or out of range")
                continue
            i, j = int(lon * 100) % 1000, int(lat * 100) % 1000
            cells.append(f"310109009{i:03d}{j:03d}")
            errors.append(None)
        n = len(cells)
        return FakeLocateResult(cell=cells, subdistrict=["310109009" if c else None for c in cells],
                                grid_kind=["street" if c else None for c in cells], snapped=[False] * n,
                                error=errors)


class FakeGazetteer:
    def __init__(self, places: dict[str, tuple[float, float]] | None = None) -> None:
        self.places = places or {"四川北路1500号": (121.4850, 31.2600)}

    def resolve(self, address: str) -> tuple[float, float] | None:
        for name, point in self.places.items():
            if name in address:
                return point
        return None
