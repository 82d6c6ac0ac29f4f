"""Personal data of hotline callers: never stored, logged or shown in clear text.

The worker keeps only a keyed hash of the caller's phone (to tell repeat callers apart) and masks phone numbers,
ID-card numbers and the caller's own name wherever free text or raw bytes leave the worker (docs/cases.md §9).

Numbers are recognised in any Unicode decimal-digit form (ASCII, full-width `１３８…`, Arabic-Indic, …): the
text is first normalised to ASCII digits character for character, so a match's position in the normalised
text is its position in the original, and everything that is not masked is kept exactly as written.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

DEV_PII_KEY = b"cityops-dev-pii-key"


MIN_PII_KEY_LENGTH = 32


def pii_key(key: str = "", production: bool = False) -> bytes:
    """The key of the caller hash: CITYOPS_PII_KEY's value (`Settings.pii_key`), or a development key outside
    production mode (`Settings.production`).

    In production (CITYOPS_ENV=production) the key must be set, must not be the development key, and must
    have at least 32 characters: with a known or short key anyone could reverse the hashes by trying every
    phone number. Services call this at start, so a bad key stops them before they touch any data.
    """
    if production:
        if not key:
            raise RuntimeError("CITYOPS_PII_KEY must be set in production mode (CITYOPS_ENV=production)")
        if key.encode() == DEV_PII_KEY or len(key) < MIN_PII_KEY_LENGTH:
            raise RuntimeError(f"CITYOPS_PII_KEY must be a secret of at least {MIN_PII_KEY_LENGTH} characters "
                               "in production mode, not the development key")
    return key.encode() if key else DEV_PII_KEY


# -- digits in any script -----------------------------------------------------------------------------------

_NOT_DIGIT = re.compile(r"\D")       # in str patterns \d is any Unicode decimal digit (category Nd)
_MOBILE_WITH_COUNTRY_CODE = re.compile(r"(?:0086|86)(1[3-9][0-9]{9})")


class _AsciiDigits(dict[int, int]):
    """A str.translate table from every decimal digit (what str.isdecimal accepts) to its ASCII digit.

    Filled as characters are met, other characters mapping to themselves: a full table would mean scanning
    all of Unicode at import. It only ever sees digits and the characters that join them in a number (a few
    hundred at most), never arbitrary text, so it stays small.
    """

    def __missing__(self, code: int) -> int:
        char = chr(code)
        self[code] = ord("0") + unicodedata.decimal(char) if char.isdecimal() else code
        return self[code]


_ASCII_DIGITS = _AsciiDigits()


def _ascii_digits(text: str) -> str:
    """`text` with every decimal digit replaced by its ASCII digit, one character for one (positions carry over)."""
    return text if text.isascii() else text.translate(_ASCII_DIGITS)


def _phone_digits(phone: str) -> str:
    """The ASCII digits of a phone number, without the +86 / 0086 / 86 in front of a mobile number."""
    digits = _ascii_digits(_NOT_DIGIT.sub("", phone))
    national = _MOBILE_WITH_COUNTRY_CODE.fullmatch(digits)
    return national.group(1) if national else digits


def caller_hash(phone: str, key: bytes = DEV_PII_KEY) -> str:
    """A keyed hash of the caller's phone: the same for every way of writing the same number.

    Digits are normalised to ASCII and the country code dropped, so `１３８１２３４５６７８`,
    `+86 138 1234 5678` and `13812345678` are one caller. At most the last 11 digits count (as they always
    did: hashes already stored stay valid).
    """
    digits = _phone_digits(phone)[-11:]
    return hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()[:16]


def mask_name(name: str) -> str:
    """The first character of a name, the rest as stars (`王**`)."""
    return (name[:1] + "*" * max(1, len(name) - 1)) if name else ""


def _masked_digits(digits: str) -> str:
    """`digits` (ASCII) with at least four of them hidden, keeping at most the first 3 and the last 4.

    `13812345678` → `138****5678`, `02162345678` → `021****5678`, `62345678` → `****5678`, `6234567` →
    `****567`; always four stars, so the mask does not tell how many digits it hides.
    """
    if len(digits) < 7:
        return "****"
    last = min(4, len(digits) - 4)
    first = min(3, len(digits) - 4 - last)
    return digits[:first] + "****" + digits[len(digits) - last:]


def mask_phone(phone: str) -> str:
    """A phone number (any digit form, any grouping, with or without country code) masked as `138****5678`."""
    return _masked_digits(_phone_digits(phone))


# -- numbers in free text -----------------------------------------------------------------------------------
# The patterns run on text whose digits are already ASCII.

# Inside a grouped number: spaces (also no-break, ideographic and zero-width ones) and hyphens or dashes, up to
# three of them between two digits ("138 - 1234 - 5678"). A dot is not one of them: between digits it is a
# decimal point, except in the dotted grouping of a mobile number (`_MOBILE`).
_SEP = "[ \\t\\u00a0\\u2000-\\u200d\\u202f\\u205f\\u2060\\u3000\\ufeff\\-\\u2010-\\u2015\\u2212\\ufe58\\ufe63\\uff0d]"
_GAP = _SEP + "{0,3}"
_DOT = "[.\\uff0e]"
# A number starts at the start of a digit run that is not the fraction of a decimal, and ends at the end of a
# digit run that is not the integer part of a decimal: `31.0212345678` and `12345678.50` stay as they are.
_START = f"(?<![0-9])(?<![0-9]{_DOT})"
_END = f"(?![0-9])(?!{_DOT}[0-9])"
_COUNTRY_CODE = "[(\\uff08]?(?:[+\\uff0b]|00)?86[)\\uff09]?"

_ID_CARD = re.compile(f"{_START}[1-9](?:{_GAP}[0-9]){{16}}{_GAP}[0-9Xx\\uff38\\uff58]{_END}")
# 13812345678, 1381 234 5678, 138-1234-5678, +86 138 1234 5678, 0086-13812345678, (+86)13812345678; and the
# dotted grouping 138.1234.5678, +86.138.1234.5678: only dots, at least two of them, so never a decimal.
_MOBILE = re.compile(
    f"{_START}(?:(?:{_COUNTRY_CODE}{_GAP})?1{_GAP}[3-9](?:{_GAP}[0-9]){{9}}"
    f"|(?:{_COUNTRY_CODE}(?:{_DOT}|{_GAP}))?(?=[0-9]+(?:{_DOT}[0-9]+){{2,}}(?!{_DOT}?[0-9]))"
    f"1{_DOT}?[3-9](?:{_DOT}?[0-9]){{9}}){_END}")
# 021-62345678, (021)62345678, 021 6234 5678, 0571-8765432, +86 21 6234 5678: area 010, 02x or 0xxx.
_LANDLINE = re.compile(
    f"{_START}(?:{_COUNTRY_CODE}{_GAP}[(\\uff08]?0?|[(\\uff08]?0)(?P<area>10|2[0-9]|[3-9][0-9]{{2}})[)\\uff09]?"
    f"{_GAP}(?P<local>[2-9][0-9]{{2,3}}{_GAP}[0-9]{{4}}){_END}")
# 62345678, 6234567, 6234 5678, 623-4567: a standalone 7 or 8 digit number starting with 2-9 is taken for a
# landline (docs/cases.md §9: masking an occasional other number is the safe mistake).
_LOCAL_NUMBER = re.compile(f"{_START}[2-9][0-9]{{2,3}}{_SEP}?[0-9]{{4}}{_END}")

# A run of seven or more digits (any form) with what may join the digits of one number: separators, dots,
# brackets and plus signs (and an ID number's final X). Every phone or ID number lies within one such run, with
# at most two opening brackets or plus signs before it, so the patterns only ever look at these runs: text
# without one (most descriptions, "3号楼前5个摊位") costs one regular-expression scan.
_JOINER = f"(?:{_SEP}|{_DOT}|[()\\uff08\\uff09+\\uff0b])"
_NUMBER_RUN = re.compile(f"\\d(?:{_JOINER}{{0,5}}\\d){{6,}}(?:{_SEP}{{0,3}}[Xx\\uff38\\uff58])?")
_OPENERS = "(\uff08+\uff0b"


def _mask_id_card(match: re.Match[str]) -> str:
    return _NOT_DIGIT.sub("", match.group())[:3] + "*" * 15


def _mask_mobile(match: re.Match[str]) -> str:
    return _masked_digits(_NOT_DIGIT.sub("", match.group())[-11:])    # the national number: its last 11


def _mask_landline(match: re.Match[str]) -> str:
    return _masked_digits("0" + match.group("area") + _NOT_DIGIT.sub("", match.group("local")))


def _mask_local_number(match: re.Match[str]) -> str:
    return _masked_digits(_NOT_DIGIT.sub("", match.group()))


class _Pass(NamedTuple):
    pattern: re.Pattern[str]
    mask: Callable[[re.Match[str]], str]
    min_length: int                      # no shorter run of digits can hold such a number


# In this order: an ID number first (its 18 digits would otherwise leave a "mobile" and a remainder), and
# landlines last, so that a number written just before a grouped mobile (`2203 1381 234 5678`) cannot take
# the mobile's first group for its own and leave the rest in clear.
_PASSES = (_Pass(_ID_CARD, _mask_id_card, 18), _Pass(_MOBILE, _mask_mobile, 11),
           _Pass(_LANDLINE, _mask_landline, 10), _Pass(_LOCAL_NUMBER, _mask_local_number, 7))


def _number_masks(text: str) -> list[tuple[int, int, str]]:
    """(start, end, mask) of every phone and ID number in `text` (any digit form), in order, not overlapping."""
    found: list[tuple[int, int, str]] = []
    for run in _NUMBER_RUN.finditer(text):
        start = run.start()
        while start > max(0, run.start() - 2) and text[start - 1] in _OPENERS:
            start -= 1
        found += [(start + s, start + e, mask) for s, e, mask in _masks_in_run(_ascii_digits(text[start:run.end()]))]
    return found


def _masks_in_run(run: str) -> list[tuple[int, int, str]]:
    """(start, end, mask) of every phone and ID number in one run of digits (ASCII), in order, not overlapping.

    Each pass runs on the run with the earlier passes' numbers blanked out, so no number is found twice and a
    later pattern never takes part of an earlier one.
    """
    found: list[tuple[int, int, str]] = []
    unmasked = len(run)
    for step in _PASSES:
        if unmasked < step.min_length:
            continue
        spans = [(m.start(), m.end(), step.mask(m)) for m in step.pattern.finditer(run)]
        if spans:
            found += spans
            unmasked -= sum(end - start for start, end, _ in spans)
            if unmasked >= _PASSES[-1].min_length:     # (else no later pass runs: one phone, the usual case)
                run = _splice(run, [(start, end, "#" * (end - start)) for start, end, _ in spans])
    return sorted(found)


def _splice(text: str, replacements: list[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) span, in order and not overlapping, replaced by its string."""
    parts: list[str] = []
    at = 0
    for start, end, new in replacements:
        parts += (text[at:start], new)
        at = end
    parts.append(text[at:])
    return "".join(parts)


def mask_text(text: str, names: tuple[str, ...] = ()) -> str:
    """`text` with phone numbers, ID numbers and the given names masked; everything else exactly as it was.

    Masks (docs/cases.md §9) mobile numbers in any digit form, grouped by spaces, dots or hyphens or not at
    all, with or without +86 / 0086 / 86 (masked with the number): `138****5678`; landlines with or without
    area code (`(021)62345678` → `021****5678`) and standalone 7-8 digit numbers starting with 2-9
    (`****5678`); 18-character ID numbers, grouped or not (`310***************`); each name of two or more
    characters (`王**`). Decimals (`31.0212345678`, `12345678.50`) are left alone. Masks are in ASCII.
    Text without a run of seven digits costs one regular-expression scan.
    """
    masks = _number_masks(text)
    out = _splice(text, masks) if masks else text
    for name in names:
        if name and len(name) >= 2:
            out = out.replace(name, mask_name(name))
    return out


# -- dead letters -------------------------------------------------------------------------------------------

MAX_REDACT_DEPTH = 20
# In bytes that are not valid JSON: a "caller" member up to its closing brace, and any "name" value.
_CALLER_SPAN = re.compile(rb'"caller"\s*:\s*(\{[^}]*\}?|"[^"]*"?|[^,}]*)', re.DOTALL)
_NAME_VALUE = re.compile(rb'("(?:name|phone)"\s*:\s*)"[^"]*"?')
_NAME_TEXT = re.compile(rb'"name"\s*:\s*"([^"]+)"')
_DIGIT_RUN = re.compile(r"\d{7,}")


def redact_bytes(raw: bytes) -> bytes:
    """Bytes that are not valid JSON, with caller objects, names, phones and long digit runs blanked out.

    Caller objects and "name"/"phone" values become `***`; the rest is masked as by `mask_text` (the names
    found in the bytes included), then every run of seven or more digits still left keeps only its first
    three. Digits count in any form (full-width `１３８…` in UTF-8 too); bytes that are not UTF-8 are kept.
    """
    names = tuple(m.group(1).decode("utf-8", "surrogateescape") for m in _NAME_TEXT.finditer(raw))
    out = _CALLER_SPAN.sub(b'"caller":"***"', raw)
    out = _NAME_VALUE.sub(rb'\1"***"', out)
    text = mask_text(out.decode("utf-8", "surrogateescape"), names)
    text = _DIGIT_RUN.sub(lambda m: _ascii_digits(m.group()[:3]) + "*" * (len(m.group()) - 3), text)
    return text.encode("utf-8", "surrogateescape")


def redact_raw(raw: bytes) -> str:
    """The raw bytes of a message as text safe to keep in a dead letter.

    A JSON object keeps its shape with `caller` masked and free text masked (nesting deeper than 20 levels is
    cut to "***"; an integer that masks as a phone or ID number becomes the masked string); anything else has
    caller objects, names, phones and every run of seven or more digits blanked out (undecodable bytes are
    shown with replacement characters).
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
    if isinstance(value, int) and not isinstance(value, bool):
        # a phone sent as a JSON number (a ticket refused for it) must not reach the dead letter either
        masked = mask_text(str(value))
        return value if masked == str(value) else masked
    return value
