"""Checks of the fields of a raw JSON message, shared by the source adapters (pipeline.stages.decode) and the
Open311 POST checks: each returns the field's value or raises `InvalidEvent` with the field's name and why."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from pipeline.model.privacy import mask_text

MAX_MESSAGE_BYTES = 64 * 1024
MAX_URL = 2000
_PHOTO_PATH = re.compile(r"/photos/[A-Za-z0-9_-]{8,64}\.(?:jpg|png|webp)")
MAX_ATTRIBUTES = 50             # answers to a service's attributes (Open311 `attribute[CODE]`) per ticket
MAX_ATTRIBUTE_VALUES = 50       # values of one multi-value answer
MAX_ATTRIBUTE_TEXT = 1000
ATTRIBUTE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InvalidEvent(ValueError):
    """A message that can never be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(f"message too large: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent(f"not valid UTF-8 JSON: {err}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"not a JSON object but {type(obj).__name__}")
    return obj


def string(obj: dict[str, Any], key: str, max_len: int) -> str:
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


def opt_string(obj: dict[str, Any], key: str, max_len: int, prefix: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{prefix}{key}: must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidEvent(f"{prefix}{key}: too long ({len(value)} characters, limit {max_len})")
    return value.strip() or None


def opt_enum(obj: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidEvent(f"{key}: {str(value)[:40]!r} is not one of {', '.join(sorted(allowed))}")
    return value


def opt_url(obj: dict[str, Any], key: str) -> str | None:
    """An optional http(s) URL with a host (a link to a photo or video), as given."""
    value = opt_string(obj, key, MAX_URL)
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


def opt_photo(obj: dict[str, Any], key: str) -> str | None:
    """An optional photo link: an http(s) URL with a host, or a path of this centre's photo store
    (`/photos/<id>.<ext>`, what the web server's uploads return; README "Photos")."""
    value = obj.get(key)
    if isinstance(value, str) and value.startswith("/"):
        if len(value) > MAX_URL or not _PHOTO_PATH.fullmatch(value):
            raise InvalidEvent(f"{key}: a local photo path must look like /photos/<id>.jpg, got {value[:60]!r}")
        return value
    return opt_url(obj, key)


def masked_link(link: str, names: tuple[str, ...] = ()) -> str:
    """A media link as stored: a path of this centre's photo store as it is (its id is a hash of an upload, no
    personal data, and masking a run of its hex digits as a "phone number" breaks the link); any other link
    masked like free text (an external URL may carry a caller's number)."""
    return link if _PHOTO_PATH.fullmatch(link) else mask_text(link, names)


def answers(obj: dict[str, Any], names: tuple[str, ...]) -> str | None:
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


def number(obj: dict[str, Any], key: str) -> float:
    if key not in obj or obj[key] is None:
        raise InvalidEvent(f"{key}: required field missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{key}: must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidEvent(f"{key}: must be finite")
    return out


def coords(obj: dict[str, Any], lon_key: str, lat_key: str) -> tuple[float, float]:
    lon, lat = number(obj, lon_key), number(obj, lat_key)
    if not -90.0 <= lat <= 90.0:
        hint = " (lat/lon swapped?)" if -90.0 <= lon <= 90.0 and -180.0 <= lat <= 180.0 else ""
        raise InvalidEvent(f"{lat_key}: latitude {lat} out of range{hint}")
    if not -180.0 <= lon <= 180.0:
        raise InvalidEvent(f"{lon_key}: longitude {lon} out of range")
    return lon, lat
