"""The naive baseline's per-message parts (pipeline.bench.naive): decoding with the standard library's `json` and
hand-written checks, and locating with one shapely STRtree query per point."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import shapely

from grid.index import DEFAULT_SNAP_TOLERANCE_M, GridIndex
from pipeline.model.events import CaseUpdate, Event, Location
from pipeline.model.privacy import caller_hash, mask_text
from pipeline.model.taxonomy import Taxonomy
from pipeline.stages.decode import ACTIONS, CHANNELS, REQUEST_TYPES, UPDATE_TEAMS, Reading
from pipeline.stages.fields import InvalidEvent

EARLIEST = datetime(2015, 1, 1, tzinfo=UTC)


# -- decode: json per message -----------------------------------------------------------------------------

class NaiveDecoder:
    """`json.loads` and a check per field; raises `InvalidEvent` for what the worker dead-letters."""

    def __init__(self, taxonomy: Taxonomy, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.taxonomy = taxonomy
        self.now = now

    def load(self, raw: bytes) -> dict[str, Any]:
        if len(raw) > 64 * 1024:
            raise InvalidEvent("message too large")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise InvalidEvent(f"not valid UTF-8 JSON: {err}") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("not a JSON object")
        return obj

    def text(self, obj: dict[str, Any], key: str, limit: int, required: bool = True) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise InvalidEvent(f"{key}: required field missing")
            return None
        if not isinstance(value, str):
            raise InvalidEvent(f"{key}: must be a string")
        if len(value.strip()) > limit:
            raise InvalidEvent(f"{key}: too long")
        if required and not value.strip():
            raise InvalidEvent(f"{key}: must not be empty")
        return value.strip() or None

    def number(self, obj: dict[str, Any], key: str) -> float:
        value = obj.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidEvent(f"{key}: must be a number")
        if not math.isfinite(float(value)):
            raise InvalidEvent(f"{key}: must be finite")
        return float(value)

    def time(self, obj: dict[str, Any], key: str) -> datetime:
        text = self.text(obj, key, 64) or ""
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"{key}: not an ISO 8601 time") from None
        if at.tzinfo is None:
            raise InvalidEvent(f"{key}: time has no UTC offset")
        at = at.astimezone(UTC)
        if at < EARLIEST or at > self.now() + timedelta(hours=1):
            raise InvalidEvent(f"{key}: time out of range")
        return at

    def category(self, obj: dict[str, Any], key: str) -> str:
        code = self.text(obj, key, 16) or ""
        if code not in self.taxonomy:
            raise InvalidEvent(f"{key}: unknown category code")
        return code

    def coords(self, obj: dict[str, Any], lon_key: str, lat_key: str) -> tuple[float, float]:
        lon, lat = self.number(obj, lon_key), self.number(obj, lat_key)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise InvalidEvent("coordinates out of range")
        return lon, lat

    def choice(self, obj: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
        value = obj.get(key)
        if value is not None and value not in allowed:
            raise InvalidEvent(f"{key}: not one of {sorted(allowed)}")
        return value

    def hotline(self, raw: bytes) -> Event:
        obj = self.load(raw)
        ticket = self.text(obj, "service_request_id", 128)
        at = self.time(obj, "requested_datetime")
        code = self.category(obj, "service_code")
        caller = obj.get("caller")
        names: tuple[str, ...] = ()
        phone_hash = None
        if caller is not None:
            if not isinstance(caller, dict):
                raise InvalidEvent("caller: must be an object")
            name = self.text(caller, "name", 200, required=False)
            phone = self.text(caller, "phone", 40, required=False)
            names = (name,) if name else ()
            phone_hash = caller_hash(phone) if phone else None
        description = self.text(obj, "description", 4000, required=False) or ""
        request_type = self.choice(obj, "request_type", REQUEST_TYPES)
        channel = self.choice(obj, "channel", CHANNELS)
        address = self.text(obj, "address_string", 500, required=False)
        if (obj.get("lat") is None) != (obj.get("long") is None):
            raise InvalidEvent("lat/long: both or neither must be given")
        lon = lat = None
        if obj.get("lat") is not None:
            lon, lat = self.coords(obj, "long", "lat")
        elif not address:
            raise InvalidEvent("location: neither lat/long nor address_string given")
        return Event(event_id=f"hotline:{ticket}", source="hotline", category=code, occurred_at=at, lon=lon,
                     lat=lat, address=mask_text(address, names) if address else None,
                     description=mask_text(description, names), request_type=request_type, channel=channel,
                     caller_hash=phone_hash)

    def patrol(self, raw: bytes) -> Event:
        obj = self.load(raw)
        report = self.text(obj, "report_id", 128)
        at = self.time(obj, "observed_at")
        team = self.text(obj, "team", 200)
        inspector = self.text(obj, "inspector", 200)
        code = self.category(obj, "category")
        lon, lat = self.coords(obj, "lon", "lat")
        note = self.text(obj, "note", 4000, required=False) or ""
        self.text(obj, "photo_url", 2000, required=False)
        return Event(event_id=f"patrol:{report}", source="patrol", category=code, occurred_at=at, lon=lon, lat=lat,
                     description=mask_text(note), team=team, actor=inspector)

    def reading(self, raw: bytes) -> Reading:
        obj = self.load(raw)
        sensor = self.text(obj, "sensor_id", 128) or ""
        sensor_type = self.text(obj, "sensor_type", 64) or ""
        value = self.number(obj, "value")
        at = self.time(obj, "measured_at")
        unit = obj.get("unit")
        if unit is not None and (not isinstance(unit, str) or len(unit) > 32):
            raise InvalidEvent("unit: must be a short string")
        lon = lat = None
        if obj.get("lat") is not None or obj.get("lon") is not None:
            lon, lat = self.coords(obj, "lon", "lat")
        return Reading(sensor, sensor_type, value, at, lon, lat)

    def update(self, raw: bytes) -> CaseUpdate:
        obj = self.load(raw)
        case_id = self.text(obj, "case_id", 128) or ""
        action = self.choice(obj, "action", ACTIONS)
        team = self.choice(obj, "team", UPDATE_TEAMS)
        if action is None or team is None:
            raise InvalidEvent("action and team are required")
        actor = self.text(obj, "actor", 200) or ""
        at = self.time(obj, "at")
        note = self.text(obj, "note", 4000, required=False) or ""
        update_id = self.text(obj, "update_id", 128, required=False) or f"{case_id}:{action}:{team}:{at.isoformat()}"
        return CaseUpdate(update_id=update_id, case_id=case_id, action=action, team=team, actor=actor, at=at,
                          note=mask_text(note))


# -- locate: one STRtree query per point ------------------------------------------------------------------

class NaiveLocator:
    """Cells in an STRtree, queried point by point: `covers` (east-then-north on shared edges), else the
    nearest cell within the snap tolerance, measured in the grid's own metric."""

    def __init__(self, index: GridIndex, snap_tolerance_m: float = DEFAULT_SNAP_TOLERANCE_M) -> None:
        self.version = index.version
        self.codes = index.codes()
        self.info = [index.cell_info(c) or {} for c in self.codes]
        geoms = [index.cell_geometry(c) for c in self.codes]
        self.tree = shapely.STRtree(geoms)
        self.metric = index.metric
        projected = [shapely.transform(g, lambda xy: np.column_stack(self.metric.to_xy(xy[:, 0], xy[:, 1])))
                     for g in geoms]
        self.metric_tree = shapely.STRtree(projected)
        self.tolerance = snap_tolerance_m

    def locate(self, lon: float, lat: float) -> Location:
        hits = self.tree.query(shapely.Point(lon, lat), predicate="covers").tolist()
        snapped = False
        if hits:
            best = max(hits, key=lambda i: (self.info[i]["col"], self.info[i]["row"]))
        else:
            x, y = self.metric.to_xy(np.array([lon]), np.array([lat]))
            near = self.metric_tree.query_nearest(shapely.Point(float(x[0]), float(y[0])),
                                                  max_distance=self.tolerance).tolist()
            if not near:
                return Location(cell=None, subdistrict=None, grid_kind=None, grid_version=self.version)
            best, snapped = min(near), True
        info = self.info[best]
        return Location(cell=str(info["cell"]), subdistrict=str(info["subdistrict"]),
                        grid_kind=info["grid_kind"], grid_version=self.version,
                        snapped=snapped)
