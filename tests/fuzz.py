"""Hostile input for the four input topics: messages that every consumer must refuse with a reason.

Each message starts as a valid one (CONTRACTS.md "Input topics") and is broken in one named way (`KINDS`):
malformed JSON, wrong types, missing fields, huge strings, deep nesting, invalid UTF-8, NaN / infinite /
out-of-range coordinates, unknown categories, times far in the past or future, duplicate JSON keys whose last
value is bad, and non-objects. Every kind is invalid by construction, so the property to test is simply
"refused, with a non-empty reason, and nothing else happens" (the worker dead-letters it, the web answers 4xx).

Two ways to draw them, from the same mutation functions:

    hostile(topic, kind, rnd)                  -> bytes (one message; `rnd` a random.Random)
    corpus(topic, n, seed)                     -> [(kind, bytes)] (deterministic; bulk runs through Kafka)
    strategy(topic)                            -> hypothesis strategy of (kind, bytes) (shrinks on failure)

Hotline tickets carry a caller (name and phone, `CALLER`) so privacy tests can search every output for them.
Free text in the untouched fields is itself unfriendly: zero-width and bidi controls, NUL, emoji, CJK.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

Feed = Literal["hotline", "patrol", "iot", "case_updates"]
FEEDS: tuple[Feed, ...] = ("hotline", "patrol", "iot", "case_updates")

CALLER = {"name": "欧阳翠花", "phone": "13987654321"}
# a registered sensor and its type: hostile readings name it, so a wrong type is caught against the registry
SENSOR_ID, SENSOR_TYPE, OTHER_TYPE = "FUZZ-TILT-1", "manhole_tilt", "water_level"
SENSOR_REGISTRY_CSV = f"sensor_id,sensor_type,lon,lat\n{SENSOR_ID},{SENSOR_TYPE},121.4905,31.2650\n"
CASE_ID = "C310109009001-0123456789ab"
NASTY_TEXT = ("路口\u200b有人\u202e摆摊\u0000 🚧 ' OR 1=1 -- <script>alert(1)</script> %(x)s {0} \\u0000",)

# field name -> limit of the decoder (pipeline.stages.decode): a longer value must be refused
_LIMITS: dict[Feed, dict[str, int]] = {
    "hotline": {"service_request_id": 128, "service_code": 16, "description": 4000, "address_string": 500,
                "requested_datetime": 64},
    "patrol": {"report_id": 128, "team": 200, "inspector": 200, "category": 16, "note": 4000},
    "iot": {"sensor_id": 128, "sensor_type": 64, "unit": 32, "measured_at": 64},
    "case_updates": {"case_id": 128, "actor": 200, "note": 4000, "at": 64},
}
_STRINGS: dict[Feed, tuple[str, ...]] = {
    "hotline": ("service_request_id", "requested_datetime", "service_code"),
    "patrol": ("report_id", "observed_at", "team", "inspector", "category"),
    "iot": ("sensor_id", "sensor_type", "measured_at"),
    "case_updates": ("case_id", "action", "team", "actor", "at"),
}
_NUMBERS: dict[Feed, tuple[str, ...]] = {
    "hotline": ("lat", "long"), "patrol": ("lat", "lon"), "iot": ("value",), "case_updates": (),
}
_TIMES: dict[Feed, str] = {"hotline": "requested_datetime", "patrol": "observed_at", "iot": "measured_at",
                           "case_updates": "at"}


def valid(feed: Feed, rnd: random.Random, now: datetime | None = None) -> dict[str, Any]:
    """A message the worker accepts (in Hongkou, an hour or so ago)."""
    at = (now or datetime.now(UTC)) - timedelta(minutes=rnd.randint(30, 600))
    when = at.isoformat(timespec="seconds").replace("+00:00", "Z")
    n = rnd.randrange(10**9)
    lon, lat = 121.48 + rnd.random() * 0.02, 31.26 + rnd.random() * 0.02
    text = rnd.choice(NASTY_TEXT)
    if feed == "hotline":
        return {"service_request_id": f"FZ{n:09d}", "requested_datetime": when, "service_code": "E0501",
                "description": text, "request_type": "complaint", "channel": "phone", "lat": lat, "long": lon,
                "caller": dict(CALLER)}
    if feed == "patrol":
        return {"report_id": f"FZP{n:09d}", "observed_at": when, "team": "patrol-ouyang", "inspector": "XC0042",
                "category": "E0102", "lat": lat, "lon": lon, "note": text}
    if feed == "iot":
        return {"sensor_id": SENSOR_ID, "sensor_type": SENSOR_TYPE, "value": round(rnd.random() * 3, 2),
                "unit": "deg", "measured_at": when}
    return {"case_id": CASE_ID, "action": "accept", "team": "handling", "actor": "CZ0001", "at": when,
            "note": text, "update_id": f"fz-{n}"}


def _dumps(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg)


def _with_raw(msg: dict[str, Any], key: str, raw_value: bytes) -> bytes:
    """The message with `key` set to JSON text that orjson cannot produce itself (NaN, 1e999, ...)."""
    body = _dumps({k: v for k, v in msg.items() if k != key})
    return body[:-1] + (b"," if len(body) > 2 else b"") + orjson.dumps(key) + b":" + raw_value + b"}"


# -- the mutations: (feed, valid message, rnd) -> invalid bytes -------------------------------------------

def _truncated(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    raw = _dumps(msg)
    return raw[: rnd.randrange(0, len(raw) - 1)]


def _garbage(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    first = rnd.choice([b"x", b"[", b"\x00", b"\xff", b"1", b'"', b"n", b"}", b"<"])
    return first + rnd.randbytes(rnd.randrange(0, 300))


def _not_object(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    return rnd.choice([orjson.dumps([msg]), b"null", b"true", b"42", b'"text"', b"[]", b"", b"   \n"])


def _invalid_utf8(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    raw = _dumps(msg)
    bad = rnd.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe6\x91", b"\x80\x80", b"\xf8\x88\x80\x80\x80"])
    first = raw.index(b'":"') + 3        # inside the first string value
    pos = rnd.randrange(first, raw.index(b'"', first) + 1)
    return raw[:pos] + bad + raw[pos:]


def _wrong_type(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    fields = _STRINGS[feed] + _NUMBERS[feed]
    key = rnd.choice(fields)
    if key in _NUMBERS[feed]:
        value: Any = rnd.choice(["31.2", True, [1.0], {"v": 1}, "NaN", ""])
    else:
        value = rnd.choice([0, 1.5, True, False, ["E0501"], {"k": "v"}, -(2**63)])
    return _dumps({**msg, key: value})


def _missing(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    key = rnd.choice(_STRINGS[feed] + _NUMBERS[feed])
    out = {k: v for k, v in msg.items() if k != key}
    if rnd.random() < 0.3:
        out[key] = None          # null is missing too
    return _dumps(out)


def _blank(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    key = rnd.choice(_STRINGS[feed])
    return _dumps({**msg, key: rnd.choice(["", "   ", "\t\n", "\u3000"])})


def _huge(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    if rnd.random() < 0.25:      # the whole message over the 64 KiB limit, in a field with no limit of its own
        return _dumps({**msg, "padding": "字" * rnd.randint(22_000, 40_000)})
    key, limit = rnd.choice(sorted(_LIMITS[feed].items()))
    return _dumps({**msg, key: rnd.choice("a字🚧") * rnd.randint(limit + 1, limit * 3 + 10)})


def _deep(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    depth = rnd.choice([50, 500, 1100, 5000])
    key = rnd.choice(_STRINGS[feed] + _NUMBERS[feed])
    opener, closer = rnd.choice([(b"[", b"]"), (b'{"a":', b"}")])
    return _with_raw(msg, key, opener * depth + b"1" + closer * depth)


def _non_finite(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    token = rnd.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"nan", b"inf"])
    key = rnd.choice(_NUMBERS[feed] or ("at",))
    return _with_raw(msg, key, token)


def _out_of_range(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    if feed == "case_updates":
        return _dumps({**msg, "action": rnd.choice(["close", "ACCEPT", "delete", "accept "])})
    lat_key, lon_key = ("lat", "long") if feed == "hotline" else ("lat", "lon")
    out = dict(msg)
    if feed == "iot":
        out["lon"] = 121.49
    if rnd.random() < 0.5:
        out[lat_key] = rnd.choice([90.0001, -91.0, 121.49, 1e300, -1e308])
        out.setdefault(lon_key, 121.49)
    else:
        out[lon_key] = rnd.choice([180.5, -181.0, 1e300, -1e308])
        out.setdefault(lat_key, 31.26)
    return _dumps(out)


def _unknown_category(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    if feed == "iot":            # a registered sensor reporting as another type
        return _dumps({**msg, "sensor_type": OTHER_TYPE})
    if feed == "case_updates":
        return _dumps({**msg, "team": rnd.choice(["police", "Handling", "patrols", "supervision\u200b"])})
    code = rnd.choice(["E9999", "P0000", "X0101", "e0501", "E05", "E05011", "", "Ｅ0501", "E0501\u200b"])
    return _dumps({**msg, "service_code" if feed == "hotline" else "category": code})


def _bad_time(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    key = _TIMES[feed]
    value = rnd.choice([
        "1970-01-01T00:00:00Z", "2014-12-31T23:59:59+00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        (datetime.now(UTC) + timedelta(days=rnd.randint(1, 3000))).isoformat(),
        "2024-05-01 08:00:00", "2024-05-01T08:00:00", "yesterday", "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z", "1714550400", "",
    ])
    return _dumps({**msg, key: value})


def _duplicate_key(feed: Feed, msg: dict[str, Any], rnd: random.Random) -> bytes:
    """A valid value first, then the same key again with a bad one: parsers that keep the last must refuse."""
    key = rnd.choice(_STRINGS[feed])
    return _dumps(msg)[:-1] + b"," + orjson.dumps(key) + b":" + rnd.choice([b"12", b"null", b"[]", b'""']) + b"}"


MUTATIONS: dict[str, Callable[[Feed, dict[str, Any], random.Random], bytes]] = {
    "truncated": _truncated, "garbage": _garbage, "not_object": _not_object, "invalid_utf8": _invalid_utf8,
    "wrong_type": _wrong_type, "missing": _missing, "blank": _blank, "huge": _huge, "deep": _deep,
    "non_finite": _non_finite, "out_of_range": _out_of_range, "unknown_category": _unknown_category,
    "bad_time": _bad_time, "duplicate_key": _duplicate_key,
}
KINDS: tuple[str, ...] = tuple(MUTATIONS)


def hostile(feed: Feed, kind: str, rnd: random.Random) -> bytes:
    """One invalid message of `feed`, broken the `kind` way."""
    return MUTATIONS[kind](feed, valid(feed, rnd), rnd)


def corpus(feed: Feed, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`n` hostile messages of `feed`, every kind in turn (deterministic for a seed)."""
    rnd = random.Random(f"{feed}:{seed}")
    return [(KINDS[i % len(KINDS)], hostile(feed, KINDS[i % len(KINDS)], rnd)) for i in range(n)]


def strategy(feed: Feed) -> Any:
    """A hypothesis strategy of (kind, bytes) for `feed` (hypothesis is a test dependency: imported here)."""
    from hypothesis import strategies as st

    return st.tuples(st.sampled_from(KINDS), st.randoms(use_true_random=False)).map(
        lambda kr: (kr[0], hostile(feed, kr[0], kr[1])))
