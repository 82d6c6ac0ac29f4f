"""Open311 POST parameters: a form (the spec's) or a JSON object, with the `attribute[CODE]` answers, made into
the `cityops.raw.hotline` message the worker's decoder then validates (pipeline.web.open311 sends it)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from pipeline.stages.fields import MAX_MESSAGE_BYTES, InvalidEvent

Json = dict[str, Any]
_ATTRIBUTE = re.compile(r"attribute\[([^\[\]]{1,64})\](\[\])?")


def _number(params: Json, key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"{key}: must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidEvent(f"{key}: must be a number, got {str(value)[:40]!r}") from None


def ticket_from_params(params: Json, attributes: Json, now: datetime) -> Json:
    """The `cityops.raw.hotline` message for Open311 POST parameters (before the decoder validates it)."""
    ticket_id = params.get("service_request_id") or f"WEB{now:%Y%m%d}-{uuid.uuid4().hex[:10].upper()}"
    msg: Json = {"service_request_id": ticket_id, "service_code": params.get("service_code"),
                 "requested_datetime": params.get("requested_datetime")
                 or now.isoformat().replace("+00:00", "Z")}
    lat, lon = _number(params, "lat"), _number(params, "long")
    if lat is not None:
        msg["lat"] = lat
    if lon is not None:
        msg["long"] = lon
    for key in ("address_string", "address_id", "description", "media_url", "request_type", "channel"):
        if params.get(key) not in (None, ""):
            msg[key] = params[key]
    if attributes:
        msg["attributes"] = attributes
    name = " ".join(str(params[k]).strip() for k in ("last_name", "first_name") if params.get(k))
    phone = params.get("phone")
    if name or phone:
        msg["caller"] = {k: v for k, v in (("name", name or None), ("phone", phone or None)) if v}
    return msg


def split_attributes(params: Json, pairs: list[tuple[str, str]] | None = None) -> dict[str, list[str]]:
    """The `attribute[CODE]` answers of POST parameters: from form pairs (`attribute[CODE]=v`,
    `attribute[CODE][]=v1&attribute[CODE][]=v2`), or a JSON body's `attribute` object (code -> value or list)
    and `attribute[CODE]` keys. InvalidEvent when an answer is not text or a number."""
    found: dict[str, list[str]] = {}
    items: list[tuple[str, Any]] = list(pairs) if pairs is not None else list(params.items())
    nested = params.get("attribute") if pairs is None else None
    if nested is not None:
        if not isinstance(nested, dict):
            raise InvalidEvent("attribute: must be an object of attribute code -> value")
        items += [(f"attribute[{code}]", value) for code, value in nested.items()]
    for key, value in items:
        m = _ATTRIBUTE.fullmatch(key)
        if m is None:
            if key.startswith("attribute["):
                raise InvalidEvent(f"{key[:70]}: not attribute[CODE] or attribute[CODE][]")
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) or not isinstance(v, str | int | float) for v in values):
            raise InvalidEvent(f"attribute[{m.group(1)}]: must be text or a number (or a list of them)")
        found.setdefault(m.group(1), []).extend(str(v) for v in values)
    return found


async def read_params(request: web.Request) -> tuple[Json, dict[str, list[str]]]:
    """POST parameters and attribute answers from a form or JSON body (InvalidEvent when the body is neither)."""
    length = request.content_length
    if length is not None and length > MAX_MESSAGE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=length)
    body = await request.read()
    if len(body) > MAX_MESSAGE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_MESSAGE_BYTES, actual_size=len(body))
    if request.content_type == "application/json":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise InvalidEvent(f"body: not valid JSON: {err}") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("body: must be a JSON object")
        return obj, split_attributes(obj)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("body: not UTF-8") from None
    pairs = parse_qsl(text, keep_blank_values=True)
    return dict(pairs), split_attributes({}, pairs)
