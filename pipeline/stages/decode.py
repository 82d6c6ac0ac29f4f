"""Source adapters: raw Kafka bytes -> a validated `Event` (or `CaseUpdate`), or `InvalidEvent(reason)`.

One adapter per input topic (CONTRACTS.md "Input topics"). Each checks types, required fields, taxonomy codes,
timestamps, coordinate ranges and sizes, and normalizes into `pipeline.model.events.Event`. Nothing here retries or
logs: an invalid message raises `InvalidEvent`, which the worker turns into a dead letter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import orjson

from pipeline.model.events import CaseUpdate, Event
from pipeline.model.privacy import DEV_PII_KEY, caller_hash, mask_text
from pipeline.model.sources import BY_NAME, Source
from pipeline.model.taxonomy import Taxonomy, default_taxonomy
from pipeline.stages.fields import (
    MAX_MESSAGE_BYTES,
    MAX_URL,
    InvalidEvent,
    answers,
    coords,
    json_object,
    masked_link,
    number,
    opt_enum,
    opt_photo,
    opt_string,
    opt_url,
    string,
)

MAX_DESCRIPTION = 4000
MAX_ID = 128
MAX_SHORT_TEXT = 200
REQUEST_TYPES = frozenset({"consult", "help", "complaint", "report", "suggestion"})
CHANNELS = frozenset({"phone", "app", "web", "wechat"})
ACTIONS = frozenset({"accept", "resolve", "verify", "reject", "reopen", "extend", "confirm", "void"})
TEAMS = frozenset({"enforcement", "handling", "supervision"})
# who may send a case update: the three teams, and a patrol verifying what supervision itself handled
# (docs/cases.md §4)
UPDATE_TEAMS = TEAMS | {"patrol"}


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Accepted event times: not before `earliest`, not more than `max_ahead` past the wall clock (a device
    with a wrong clock must not move a case book's stream clock ahead and escalate early: docs/cases.md §7.3)."""

    earliest: datetime = datetime(2015, 1, 1, tzinfo=UTC)
    max_ahead: timedelta = timedelta(minutes=5)


# A reading's fields from `Decoder.reading_fields`: sensor_id, sensor_type, value, time (POSIX s), time, lon, lat.
ReadingFields = tuple[str, str, float, float, datetime, float | None, float | None]
_loads, _JSONDecodeError = orjson.loads, orjson.JSONDecodeError
_isfinite, _fromisoformat = math.isfinite, datetime.fromisoformat
_FLOATS = (float, int)


class _ReadingWire(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A reading's fields as `reading_fields` takes them: msgspec checks the types while it parses (an int value or
    coordinate comes as a float; a bool, a string or null where a number must be fails). Anything it refuses goes
    to `reading`, which says why; so does a message with other keys (orjson and msgspec disagree on values
    nobody reads here, such as 1e999 or a deep nesting) or with bytes outside ASCII (msgspec does not check the
    UTF-8 of keys it skips)."""

    sensor_id: str
    sensor_type: str
    value: float
    measured_at: str
    unit: str | None = None
    lon: float | None = None
    lat: float | None = None


_wire_reading = msgspec.json.Decoder(_ReadingWire).decode
# what msgspec raises on input it refuses: its own errors, UnicodeDecodeError (a ValueError) for a string that is
# not UTF-8, RecursionError for deep nesting
_WireError = (msgspec.MsgspecError, ValueError, RecursionError)


class Reading(NamedTuple):
    sensor_id: str
    sensor_type: str
    value: float
    at: datetime
    lon: float | None
    lat: float | None

    def event(self, category: str = "", event_id: str | None = None) -> Event:
        return Event(event_id=event_id or f"iot:{self.sensor_id}@{self.at.timestamp():.3f}", source="iot",
                     category=category, occurred_at=self.at, lon=self.lon, lat=self.lat, sensor_id=self.sensor_id,
                     sensor_type=self.sensor_type, value=self.value)


@dataclass(frozen=True)
class Decoder:
    taxonomy: Taxonomy
    window: TimeWindow = TimeWindow()
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    pii_key: bytes = field(default=DEV_PII_KEY, repr=False)     # the caller hash's (Settings.pii_key)

    # -- the four topics -------------------------------------------------------------------------------

    def hotline(self, raw: bytes) -> Event:
        obj = json_object(raw)
        ticket = string(obj, "service_request_id", max_len=MAX_ID)
        at = self._time(obj, "requested_datetime")
        code = self._category(obj, "service_code")
        caller = obj.get("caller")
        names: tuple[str, ...] = ()
        phone_hash = None
        if caller is not None:
            if not isinstance(caller, dict):
                raise InvalidEvent("caller: must be an object with name and phone")
            name = opt_string(caller, "name", MAX_SHORT_TEXT, prefix="caller.")
            phone = opt_string(caller, "phone", 40, prefix="caller.")
            names = (name,) if name else ()
            phone_hash = caller_hash(phone, self.pii_key) if phone else None
        description = opt_string(obj, "description", MAX_DESCRIPTION) or ""
        request_type = opt_enum(obj, "request_type", REQUEST_TYPES)
        channel = opt_enum(obj, "channel", CHANNELS)
        address = opt_string(obj, "address_string", 500)
        address_id = opt_string(obj, "address_id", MAX_ID)
        media_url = opt_url(obj, "media_url")
        attributes = answers(obj, names)
        has_lat, has_lon = obj.get("lat") is not None, obj.get("long") is not None
        if has_lat != has_lon:
            raise InvalidEvent("lat/long: both or neither must be given")
        lon = lat = None
        if has_lat:
            lon, lat = coords(obj, "long", "lat")
        elif not address:
            raise InvalidEvent("location: neither lat/long nor address_string given")
        return Event(
            event_id=f"hotline:{ticket}", source="hotline", category=code, occurred_at=at, lon=lon, lat=lat,
            address=mask_text(address, names) if address else None, description=mask_text(description, names),
            request_type=request_type, channel=channel, caller_hash=phone_hash,
            media_url=masked_link(media_url, names) if media_url else None,
            address_id=mask_text(address_id, names) if address_id else None,
            attributes=attributes,
        )

    def patrol(self, raw: bytes) -> Event:
        obj = json_object(raw)
        report = string(obj, "report_id", max_len=MAX_ID)
        at = self._time(obj, "observed_at")
        team = string(obj, "team", max_len=MAX_SHORT_TEXT)
        inspector = string(obj, "inspector", max_len=MAX_SHORT_TEXT)
        code = self._category(obj, "category")
        lon, lat = coords(obj, "lon", "lat")
        note = opt_string(obj, "note", MAX_DESCRIPTION) or ""
        # any reference a patrol app gives is kept as it was accepted before (an object-store key, a URL), in the
        # column of a ticket's media link (events.media_url): one column for the "before" pictures of a case
        photo = opt_string(obj, "photo_url", MAX_URL)
        return Event(event_id=f"patrol:{report}", source="patrol", category=code, occurred_at=at, lon=lon,
                     lat=lat, description=mask_text(note), team=team, actor=inspector,
                     media_url=masked_link(photo) if photo else None)

    def reading(self, raw: bytes) -> Reading:
        """A sensor reading, validated, as a light tuple: readings are the bulk of the input and most of them
        only update their sensor's state and aggregates."""
        obj = json_object(raw)
        sensor = string(obj, "sensor_id", max_len=MAX_ID)
        sensor_type = string(obj, "sensor_type", max_len=64)
        value = number(obj, "value")
        at = self._time(obj, "measured_at")
        unit = obj.get("unit")
        if unit is not None and (not isinstance(unit, str) or len(unit) > 32):
            raise InvalidEvent("unit: must be a string of at most 32 characters")
        lon = lat = None
        if obj.get("lat") is not None or obj.get("lon") is not None:
            lon, lat = coords(obj, "lon", "lat")
        return Reading(sensor, sensor_type, value, at, lon, lat)

    def reading_bounds(self) -> tuple[float, float]:
        """The event times (POSIX seconds) `reading_fields` accepts without asking `reading`: a second inside the
        window on both sides, from the wall clock read once (per batch)."""
        return (self.window.earliest.timestamp() + 1.0,
                (self.now() + self.window.max_ahead).timestamp() - 1.0)

    def reading_fields(self, raw: bytes, bounds: tuple[float, float]) -> ReadingFields | None:
        """`reading`'s fast path for the worker's batches: the same checks, in one function, on a reading that
        passes them all, returned as plain fields (with its time as POSIX seconds). None whenever anything is
        off or unusual (a time near the window's edges included): then `reading` decides, and says why."""
        if len(raw) > MAX_MESSAGE_BYTES or not raw.isascii():
            return None
        try:
            r = _wire_reading(raw)
        except _WireError:
            return None
        sid, stype, text = r.sensor_id.strip(), r.sensor_type.strip(), r.measured_at.strip()
        if not (0 < len(sid) <= MAX_ID and 0 < len(stype) <= 64 and 0 < len(text) <= 64):
            return None
        value = r.value
        if not _isfinite(value):
            return None
        try:
            at = _fromisoformat(text)        # Python 3.11 reads a "Z" suffix (`_time` spells it out for clarity)
        except ValueError:
            return None
        if at.tzinfo is not UTC:
            if at.utcoffset() is None:
                return None
            at = at.astimezone(UTC)
        ts = at.timestamp()
        if not bounds[0] < ts < bounds[1]:
            return None
        unit = r.unit
        if unit is not None and len(unit) > 32:
            return None
        lon, lat = r.lon, r.lat
        if (lon is not None or lat is not None) and (
                lon is None or lat is None or not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0)):
            return None
        return sid, stype, value, ts, at, lon, lat

    def iot(self, raw: bytes) -> Event:
        """A sensor reading as an Event. Its category comes later from the sensor registry (a reading is no case)."""
        return self.reading(raw).event()

    def case_update(self, raw: bytes) -> CaseUpdate:
        obj = json_object(raw)
        case_id = string(obj, "case_id", max_len=MAX_ID)
        action = opt_enum(obj, "action", ACTIONS)
        if action is None:
            raise InvalidEvent(f"action: required, one of {', '.join(sorted(ACTIONS))}")
        team = opt_enum(obj, "team", UPDATE_TEAMS)
        if team is None:
            raise InvalidEvent(f"team: required, one of {', '.join(sorted(UPDATE_TEAMS))}")
        actor = string(obj, "actor", max_len=MAX_SHORT_TEXT)
        at = self._time(obj, "at")
        note = opt_string(obj, "note", MAX_DESCRIPTION) or ""
        update_id = opt_string(obj, "update_id", MAX_ID) or f"{case_id}:{action}:{team}:{at.isoformat()}"
        until = self._deadline(obj, "until") if action == "extend" else None
        photo = opt_photo(obj, "photo_url")
        if photo and action != "resolve":
            raise InvalidEvent(f"photo_url: only a resolve carries a photo (the after photo), not {action}")
        return CaseUpdate(update_id=update_id, case_id=case_id, action=action, team=team, actor=actor, at=at,
                          note=mask_text(note), until=until, photo_url=photo or "")

    def for_source(self, source: Source) -> Callable[[bytes], Event]:
        method: Callable[[bytes], Event] = getattr(self, BY_NAME[source].decoder)
        return method

    # -- shared checks ---------------------------------------------------------------------------------

    def _category(self, obj: dict[str, Any], key: str) -> str:
        code = string(obj, key, max_len=16)
        if code not in self.taxonomy:
            raise InvalidEvent(f"{key}: unknown category code {code!r} (not in the taxonomy)")
        return code

    def _deadline(self, obj: dict[str, Any], key: str) -> datetime:
        """A deadline (in the future, unlike a report's time): ISO 8601 with an offset, at most a year ahead."""
        text = string(obj, key, max_len=64)
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"{key}: not an ISO 8601 time: {text[:64]!r}") from None
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidEvent(f"{key}: time has no UTC offset: {text!r}")
        at = at.astimezone(UTC)
        if at < self.window.earliest or at > self.now() + timedelta(days=366):
            raise InvalidEvent(f"{key}: {text} is not a plausible deadline")
        return at

    def _time(self, obj: dict[str, Any], key: str) -> datetime:
        text = string(obj, key, max_len=64)
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"{key}: not an ISO 8601 time: {text[:64]!r}") from None
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidEvent(f"{key}: time has no UTC offset: {text!r}")
        if at.tzinfo is not UTC:
            at = at.astimezone(UTC)
        if at < self.window.earliest:
            raise InvalidEvent(f"{key}: {text} is before {self.window.earliest.date()} (too far in the past)")
        if at > self.now() + self.window.max_ahead:
            raise InvalidEvent(f"{key}: {text} is in the future")
        return at


def default_decoder(max_ahead: timedelta | None = None, pii_key: bytes = DEV_PII_KEY) -> Decoder:
    window = TimeWindow() if max_ahead is None else TimeWindow(max_ahead=max_ahead)
    return Decoder(taxonomy=default_taxonomy(), window=window, pii_key=pii_key)
