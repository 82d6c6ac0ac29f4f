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


MIN_PII_KEY_LENGTH = 32


def pii_key() -> bytes:
    """The key of the caller hash: CITYOPS_PII_KEY, or a development key outside production mode.

    In production (CITYOPS_ENV=production) the key must be set, must not be the development key, and must
    have at least 32 characters: with a known or short key anyone could reverse the hashes by trying every
    phone number. Services call this at start, so a bad key stops them before they touch any data.
    """
    key = os.environ.get("CITYOPS_PII_KEY", "")
    production = os.environ.get("CITYOPS_ENV", "development") == "production"
    if production:
        if not key:
            raise RuntimeError("CITYOPS_PII_KEY must be set in production mode (CITYOPS_ENV=production)")
        if key.encode() == DEV_PII_KEY or len(key) < MIN_PII_KEY_LENGTH:
            raise RuntimeError(f"CITYOPS_PII_KEY must be a secret of at least {MIN_PII_KEY_LENGTH} characters "
                               "in production mode, not the development key")
    return key.encode() if key else DEV_PII_KEY


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


MAX_REDACT_DEPTH = 20
# In bytes that are not valid JSON: a "caller" member up to its closing brace, and any "name" value.
_CALLER_SPAN = re.compile(rb'"caller"\s*:\s*(\{[^}]*\}?|"[^"]*"?|[^,}]*)', re.DOTALL)
_NAME_VALUE = re.compile(rb'("(?:name|phone)"\s*:\s*)"[^"]*"?')


def redact_bytes(raw: bytes) -> bytes:
    """Bytes that are not valid JSON, with caller objects, names, phones and long digit runs blanked out."""
    out = _CALLER_SPAN.sub(b'"caller":"***"', raw)
    out = _NAME_VALUE.sub(rb'\1"***"', out)
    return re.sub(rb"\d{7,}", lambda m: m.group()[:3] + b"*" * (len(m.group()) - 3), out)


def redact_raw(raw: bytes) -> str:
    """The raw bytes of a message as text safe to keep in a dead letter.

    A JSON object keeps its shape with `caller` masked and free text masked (nesting deeper than 20 levels is
    cut to "***"); anything else has caller objects, names, phones and every run of seven or more digits
    blanked out (undecodable bytes are shown with replacement characters).
    """
    try:
        obj = orjson.loads(raw)
        return orjson.dumps(_redact_value(obj, (), 0)).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError, TypeError):
        return mask_text(redact_bytes(raw).decode("utf-8", errors="replace"))


def _redact_value(value: Any, names: tuple[str, ...], depth: int) -> Any:
    if depth > MAX_REDACT_DEPTH and isinstance(value, dict | list):
        return "***"
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
                out[k] = _redact_value(v, names, depth + 1)
        return out
    if isinstance(value, list):
        return [_redact_value(v, names, depth + 1) for v in value]
    if isinstance(value, str):
        return mask_text(value, names)
    return value
