"""Source adapters: raw Kafka bytes -> a validated `Event` (or `CaseUpdate`), or `InvalidEvent(reason)`.

One adapter per input topic (CONTRACTS.md "Input topics"). Each checks types, required fields, taxonomy codes,
timestamps, coordinate ranges and sizes, and normalizes into `pipeline.model.events.Event`. Nothing here retries or
logs: an invalid message raises `InvalidEvent`, which the worker turns into a dead letter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from pipeline.model.events import CaseUpdate, Event
from pipeline.model.privacy import DEV_PII_KEY, caller_hash, mask_text
from pipeline.model.sources import BY_NAME, Source
from pipeline.model.taxonomy import Taxonomy, default_taxonomy

MAX_MESSAGE_BYTES = 64 * 1024
MAX_DESCRIPTION = 4000
MAX_ID = 128
MAX_SHORT_TEXT = 200
MAX_URL = 2000
_PHOTO_PATH = re.compile(r"/photos/[A-Za-z0-9_-]{8,64}\.(?:jpg|png|webp)")
MAX_ATTRIBUTES = 50             # answers to a service's attributes (Open311 `attribute[CODE]`) per ticket
MAX_ATTRIBUTE_VALUES = 50       # values of one multi-value answer
MAX_ATTRIBUTE_TEXT = 1000
ATTRIBUTE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REQUEST_TYPES = frozenset({"consult", "help", "complaint", "report", "suggestion"})
CHANNELS = frozenset({"phone", "app", "web", "wechat"})
ACTIONS = frozenset({"accept", "resolve", "verify", "reject", "reopen", "extend"})
TEAMS = frozenset({"enforcement", "handling", "supervision"})
# who may send a case update: the three teams, and a patrol verifying what supervision itself handled
# (docs/cases.md §4)
UPDATE_TEAMS = TEAMS | {"patrol"}


class InvalidEvent(ValueError):
    """A message that can never be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        obj = _object(raw)
        ticket = _string(obj, "service_request_id", max_len=MAX_ID)
        at = self._time(obj, "requested_datetime")
        code = self._category(obj, "service_code")
        caller = obj.get("caller")
        names: tuple[str, ...] = ()
        phone_hash = None
        if caller is not None:
            if not isinstance(caller, dict):
                raise InvalidEvent("caller: must be an object with name and phone")
            name = _opt_string(caller, "name", MAX_SHORT_TEXT, prefix="caller.")
            phone = _opt_string(caller, "phone", 40, prefix="caller.")
            names = (name,) if name else ()
            phone_hash = caller_hash(phone, self.pii_key) if phone else None
        description = _opt_string(obj, "description", MAX_DESCRIPTION) or ""
        request_type = _opt_enum(obj, "request_type", REQUEST_TYPES)
        channel = _opt_enum(obj, "channel", CHANNELS)
        address = _opt_string(obj, "address_string", 500)
        address_id = _opt_string(obj, "address_id", MAX_ID)
        media_url = _opt_url(obj, "media_url")
        attributes = _attributes(obj, names)
        has_lat, has_lon = obj.get("lat") is not None, obj.get("long") is not None
        if has_lat != has_lon:
            raise InvalidEvent("lat/long: both or neither must be given")
        lon = lat = None
        if has_lat:
            lon, lat = _coords(obj, "long", "lat")
        elif not address:
            raise InvalidEvent("location: neither lat/long nor address_string given")
        return Event(
            event_id=f"hotline:{ticket}", source="hotline", category=code, occurred_at=at, lon=lon, lat=lat,
            address=mask_text(address, names) if address else None, description=mask_text(description, names),
            request_type=request_type, channel=channel, caller_hash=phone_hash,
            media_url=mask_text(media_url, names) if media_url else None,
            address_id=mask_text(address_id, names) if address_id else None,
            attributes=attributes,
        )

    def patrol(self, raw: bytes) -> Event:
        obj = _object(raw)
        report = _string(obj, "report_id", max_len=MAX_ID)
        at = self._time(obj, "observed_at")
        team = _string(obj, "team", max_len=MAX_SHORT_TEXT)
        inspector = _string(obj, "inspector", max_len=MAX_SHORT_TEXT)
        code = self._category(obj, "category")
        lon, lat = _coords(obj, "lon", "lat")
        note = _opt_string(obj, "note", MAX_DESCRIPTION) or ""
        # any reference a patrol app gives is kept as it was accepted before (an object-store key, a URL), in the
        # column of a ticket's media link (events.media_url): one column for the "before" pictures of a case
        photo = _opt_string(obj, "photo_url", MAX_URL)
        return Event(event_id=f"patrol:{report}", source="patrol", category=code, occurred_at=at, lon=lon,
                     lat=lat, description=mask_text(note), team=team, actor=inspector,
                     media_url=mask_text(photo) if photo else None)

    def reading(self, raw: bytes) -> Reading:
        """A sensor reading, validated, as a light tuple: readings are the bulk of the input and most of them
        only update their sensor's state and aggregates."""
        obj = _object(raw)
        sensor = _string(obj, "sensor_id", max_len=MAX_ID)
        sensor_type = _string(obj, "sensor_type", max_len=64)
        value = _number(obj, "value")
        at = self._time(obj, "measured_at")
        unit = obj.get("unit")
        if unit is not None and (not isinstance(unit, str) or len(unit) > 32):
            raise InvalidEvent("unit: must be a string of at most 32 characters")
        lon = lat = None
        if obj.get("lat") is not None or obj.get("lon") is not None:
            lon, lat = _coords(obj, "lon", "lat")
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
        if len(raw) > MAX_MESSAGE_BYTES:
            return None
        try:
            obj = _loads(raw)
        except _JSONDecodeError:
            return None
        if type(obj) is not dict:
            return None
        sid, stype, text = obj.get("sensor_id"), obj.get("sensor_type"), obj.get("measured_at")
        value: Any = obj.get("value")
        if type(sid) is not str or type(stype) is not str or type(text) is not str:
            return None
        sid, stype, text = sid.strip(), stype.strip(), text.strip()
        if not (0 < len(sid) <= MAX_ID and 0 < len(stype) <= 64 and 0 < len(text) <= 64):
            return None
        kind = type(value)
        if kind is int:
            value = float(value)
        elif kind is not float or not _isfinite(value):
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
        unit = obj.get("unit")
        if unit is not None and (type(unit) is not str or len(unit) > 32):
            return None
        lon: Any = obj.get("lon")
        lat: Any = obj.get("lat")
        if lon is not None or lat is not None:
            if type(lon) not in _FLOATS or type(lat) not in _FLOATS:
                return None
            lon, lat = float(lon), float(lat)
            if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                return None
        return sid, stype, value, ts, at, lon, lat

    def iot(self, raw: bytes) -> Event:
        """A sensor reading as an Event. Its category comes later from the sensor registry (a reading is no case)."""
        return self.reading(raw).event()

    def case_update(self, raw: bytes) -> CaseUpdate:
        obj = _object(raw)
        case_id = _string(obj, "case_id", max_len=MAX_ID)
        action = _opt_enum(obj, "action", ACTIONS)
        if action is None:
            raise InvalidEvent(f"action: required, one of {', '.join(sorted(ACTIONS))}")
        team = _opt_enum(obj, "team", UPDATE_TEAMS)
        if team is None:
            raise InvalidEvent(f"team: required, one of {', '.join(sorted(UPDATE_TEAMS))}")
        actor = _string(obj, "actor", max_len=MAX_SHORT_TEXT)
        at = self._time(obj, "at")
        note = _opt_string(obj, "note", MAX_DESCRIPTION) or ""
        update_id = _opt_string(obj, "update_id", MAX_ID) or f"{case_id}:{action}:{team}:{at.isoformat()}"
        until = self._deadline(obj, "until") if action == "extend" else None
        photo = _opt_photo(obj, "photo_url")
        if photo and action != "resolve":
            raise InvalidEvent(f"photo_url: only a resolve carries a photo (the after photo), not {action}")
        return CaseUpdate(update_id=update_id, case_id=case_id, action=action, team=team, actor=actor, at=at,
                          note=mask_text(note), until=until, photo_url=photo or "")

    def for_source(self, source: Source) -> Callable[[bytes], Event]:
        method: Callable[[bytes], Event] = getattr(self, BY_NAME[source].decoder)
        return method

    # -- shared checks ---------------------------------------------------------------------------------

    def _category(self, obj: dict[str, Any], key: str) -> str:
        code = _string(obj, key, max_len=16)
        if code not in self.taxonomy:
            raise InvalidEvent(f"{key}: unknown category code {code!r} (not in the taxonomy)")
        return code

    def _deadline(self, obj: dict[str, Any], key: str) -> datetime:
        """A deadline (in the future, unlike a report's time): ISO 8601 with an offset, at most a year ahead."""
        text = _string(obj, key, max_len=64)
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
        text = _string(obj, key, max_len=64)
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


def _object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(f"message too large: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(f"not valid UTF-8 JSON: {err}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"not a JSON object but {type(obj).__name__}")
    return obj


def _string(obj: dict[str, Any], key: str, max_len: int) -> str:
    if key not in obj or obj[key] is None:
        raise InvalidEvent(f"{key}: required field missing")
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidEvent(f"{key}: must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise InvalidEvent(f"{key}: must not be empty")
    if len(value) > max_len:
        raise InvalidEvent(f"{key}: too long ({len(value)} characters, limit {max_len})")
    return value


def _opt_string(obj: dict[str, Any], key: str, max_len: int, prefix: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{prefix}{key}: must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidEvent(f"{prefix}{key}: too long ({len(value)} characters, limit {max_len})")
    return value.strip() or None


def _opt_enum(obj: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidEvent(f"{key}: {str(value)[:40]!r} is not one of {', '.join(sorted(allowed))}")
    return value


def _opt_url(obj: dict[str, Any], key: str) -> str | None:
    """An optional http(s) URL with a host (a link to a photo or video), as given."""
    value = _opt_string(obj, key, MAX_URL)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:          # e.g. an unclosed IPv6 bracket
        host = None
        parts = None
    if (parts is None or parts.scheme.lower() not in ("http", "https") or not host
            or any(c.isspace() or not c.isprintable() for c in value)):
        raise InvalidEvent(f"{key}: must be an http or https URL with a host, got {value[:60]!r}")
    return value


def _opt_photo(obj: dict[str, Any], key: str) -> str | None:
    """An optional photo link: an http(s) URL with a host, or a path of this centre's photo store
    (`/photos/<id>.<ext>`, what the web server's uploads return; README "Photos")."""
    value = obj.get(key)
    if isinstance(value, str) and value.startswith("/"):
        if len(value) > MAX_URL or not _PHOTO_PATH.fullmatch(value):
            raise InvalidEvent(f"{key}: a local photo path must look like /photos/<id>.jpg, got {value[:60]!r}")
        return value
    return _opt_url(obj, key)


def _attributes(obj: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The answers to a service's attributes (`attributes`: {code: text or [texts]}) as canonical JSON text,
    values masked like free text; None when there are none. Only their shape is checked here: whether a service
    has such an attribute is the Open311 API's check (a hotline's call taker may not have asked)."""
    value = obj.get("attributes")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent("attributes: must be an object of attribute code -> value or list of values")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidEvent(f"attributes: at most {MAX_ATTRIBUTES} answers, got {len(value)}")
    out: dict[str, str | list[str]] = {}
    for code, answer in value.items():
        if not ATTRIBUTE_CODE.fullmatch(code):
            raise InvalidEvent(f"attributes: {code[:40]!r} is not an attribute code (1-64 letters, digits, _ . -)")
        many = isinstance(answer, list)
        items = answer if many else [answer]
        if len(items) > MAX_ATTRIBUTE_VALUES or not all(isinstance(v, str) for v in items):
            raise InvalidEvent(f"attributes.{code}: must be text or a list of at most {MAX_ATTRIBUTE_VALUES} texts")
        if any(len(v) > MAX_ATTRIBUTE_TEXT for v in items):
            raise InvalidEvent(f"attributes.{code}: a value is longer than {MAX_ATTRIBUTE_TEXT} characters")
        texts = [mask_text(v.strip(), names) for v in items if v.strip()]
        if texts:
            out[code] = texts if many else texts[0]
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode() if out else None


def _number(obj: dict[str, Any], key: str) -> float:
    if key not in obj or obj[key] is None:
        raise InvalidEvent(f"{key}: required field missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{key}: must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidEvent(f"{key}: must be finite")
    return out


def _coords(obj: dict[str, Any], lon_key: str, lat_key: str) -> tuple[float, float]:
    lon, lat = _number(obj, lon_key), _number(obj, lat_key)
    if not -90.0 <= lat <= 90.0:
        hint = " (lat/lon swapped?)" if -90.0 <= lon <= 90.0 and -180.0 <= lat <= 180.0 else ""
        raise InvalidEvent(f"{lat_key}: latitude {lat} out of range{hint}")
    if not -180.0 <= lon <= 180.0:
        raise InvalidEvent(f"{lon_key}: longitude {lon} out of range")
    return lon, lat
