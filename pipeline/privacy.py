"""Personal data of hotline callers: never stored, logged or shown in clear text.

The worker keeps only a keyed hash of the caller's phone (to tell repeat callers apart) and masks phone numbers,
ID-card numbers and the caller's own name wherever free text or raw bytes leave the worker.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Any

import orjson

# Mainland mobile numbers (1[3-9]xxxxxxxxx, optionally +86 / spaced / dashed), landlines (0xx-xxxxxxxx) and
# 18-character resident ID numbers.
_PHONE = re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)0\d{2,3}[- ]?\d{7,8}(?!\d)")
_ID_CARD = re.compile(r"(?<![0-9Xx])\d{17}[0-9Xx](?![0-9Xx])")
_DIGIT_RUN = re.compile(r"\d{7,}")

DEV_PII_KEY = b"cityops-dev-pii-key"


def pii_key() -> bytes:
    """The key of the caller hash: CITYOPS_PII_KEY, or a development key outside production mode."""
    key = os.environ.get("CITYOPS_PII_KEY")
    if key:
        return key.encode()
    if os.environ.get("CITYOPS_ENV", "development") == "production":
        raise RuntimeError("CITYOPS_PII_KEY must be set in production mode (CITYOPS_ENV=production)")
    return DEV_PII_KEY


def caller_hash(phone: str, key: bytes | None = None) -> str:
    digits = re.sub(r"\D", "", phone)[-11:]
    return hmac.new(key or pii_key(), digits.encode(), hashlib.sha256).hexdigest()[:16]


def mask_name(name: str) -> str:
    return (name[:1] + "*" * max(1, len(name) - 1)) if name else ""


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 7 else "****"


def mask_text(text: str, names: tuple[str, ...] = ()) -> str:
    """Mask phone numbers, ID numbers and the given names in free text."""
    out = _ID_CARD.sub(lambda m: m.group()[:4] + "*" * 14, text)
    out = _PHONE.sub(lambda m: mask_phone(m.group()), out)
    out = _LANDLINE.sub(lambda m: mask_phone(m.group()), out)
    for name in names:
        if name and len(name) >= 2:
            out = out.replace(name, mask_name(name))
    return out


def redact_raw(raw: bytes) -> str:
    """The raw bytes of a message as text safe to keep in a dead letter.

    A JSON object keeps its shape with `caller` masked and free text masked; anything else has every run of
    seven or more digits masked (undecodable bytes are shown with replacement characters).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return _DIGIT_RUN.sub(lambda m: m.group()[:3] + "*" * (len(m.group()) - 3), mask_text(text))
    return orjson.dumps(_redact_value(obj, ())).decode()


def _redact_value(value: Any, names: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        caller = value.get("caller")
        if isinstance(caller, dict) and isinstance(caller.get("name"), str):
            names = (*names, caller["name"])
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "caller" and isinstance(v, dict):
                out[k] = {ck: (mask_phone(cv) if ck == "phone" and isinstance(cv, str)
                               else mask_name(cv) if ck == "name" and isinstance(cv, str)
                               else "***") for ck, cv in v.items()}
            elif k == "caller":
                out[k] = "***"
            else:
                out[k] = _redact_value(v, names)
        return out
    if isinstance(value, list):
        return [_redact_value(v, names) for v in value]
    if isinstance(value, str):
        return mask_text(value, names)
    return value
