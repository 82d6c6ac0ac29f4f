"""ClickHouse's Native format, encoded in bulk: column after column, numbers packed in one C-level call, strings
length-prefixed at once, LowCardinality and Nullable as the table declares. The server parses the block with no
per-value text parsing.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain, repeat
from operator import is_
from typing import Any

import numpy as np

_FIXED_WIDTH: dict[str, str] = {
    "UInt8": "<u1", "UInt16": "<u2", "UInt32": "<u4", "UInt64": "<u8",
    "Int8": "<i1", "Int16": "<i2", "Int32": "<i4", "Int64": "<i8",
    "Float32": "<f4", "Float64": "<f8",
    "DateTime": "<u4",  # epoch seconds (to_columns converts datetimes); DateTime('tz') stores the same
}


_NONE = repeat(None)


_NAN = float("nan")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _text(s: str) -> bytes:
    raw = s.encode()
    return _varint(len(raw)) + raw


def _base_type(typ: str) -> str:
    return "DateTime" if typ.startswith("DateTime(") else typ


def encode_strings(values: Sequence[str]) -> bytes:
    """A String column: each value as varint(byte length) + UTF-8.

    No per-value Python work: the column is joined with a NUL before each value and encoded once; the NULs'
    byte positions give every value's UTF-8 length. When all lengths are below 128 (codes, ids, most texts),
    each NUL is overwritten with its value's length and the buffer *is* the column; else numpy spreads the
    payload to make room for longer prefixes. A value holding NUL itself (never in practice) makes the
    separators ambiguous; such a column is encoded value by value.
    """
    n = len(values)
    if n == 0:
        return b""
    # TypeError for a non-text value (UnicodeEncodeError for a lone surrogate): refused, not retried
    raw = ("\x00" + "\x00".join(values)).encode()
    buf = np.frombuffer(raw, np.uint8)
    marks = np.flatnonzero(buf == 0)
    if marks.size != n:
        return b"".join(map(_text, values))
    lengths = np.diff(marks, append=buf.size) - 1
    if int(lengths.max()) < 0x80:
        out = buf.copy()
        out[marks] = lengths
        return out.tobytes()
    return _prefixed(np.delete(buf, marks), lengths)


def _prefixed(payload: np.ndarray[Any, np.dtype[np.uint8]], lengths: np.ndarray[Any, np.dtype[np.int64]]) -> bytes:
    """`payload` (the values' UTF-8 bytes end to end) with each value's varint length put before it."""
    n = lengths.size
    # bytes of each length's varint: 1 below 128, one more per further 7 bits
    width = np.ones(n, np.int64)
    shift = 7
    while True:
        more = lengths >= (1 << shift)
        if not more.any():
            break
        width += more
        shift += 7
    starts = np.zeros(n, np.int64)      # where each value's prefix begins in the output
    np.cumsum((lengths + width)[:-1], out=starts[1:])
    out = np.empty(int(payload.size + width.sum()), np.uint8)
    is_payload = np.ones(out.size, bool)
    for k in range(int(width.max())):   # k-th varint byte of every value that has one
        has = width > k
        at = starts[has] + k
        byte = (lengths[has] >> (7 * k)) & 0x7F
        out[at] = byte | np.where(width[has] > k + 1, 0x80, 0)
        is_payload[at] = False
    out[is_payload] = payload
    return out.tobytes()


def encode_column(typ: str, values: Sequence[Any]) -> bytes:
    """One column's values in the Native layout of ClickHouse type `typ`.

    Raises ValueError for a type this encoder does not write, TypeError / OverflowError for a value that does
    not fit its type (e.g. a negative UInt32): data errors, which the sink refuses instead of retrying.
    """
    return _state_prefix(typ) + _column_body(typ, values)


def _wrapped(typ: str, wrapper: str) -> str | None:
    """`X` when `typ` is `wrapper(X)`, else None."""
    if typ.startswith(wrapper + "(") and typ.endswith(")"):
        return typ[len(wrapper) + 1:-1]
    return None


def _state_prefix(typ: str) -> bytes:
    """What a column writes once before its values: LowCardinality its keys' serialization version
    (1: dictionaries with additional keys), wherever it sits inside Array / Nullable; other types nothing."""
    if _wrapped(typ, "LowCardinality") is not None:
        return _LOW_CARDINALITY_VERSION
    inner = _wrapped(typ, "Array") or _wrapped(typ, "Nullable")
    return b"" if inner is None else _state_prefix(inner)


_LOW_CARDINALITY_VERSION = (1).to_bytes(8, "little")


_HAS_ADDITIONAL_KEYS = 1 << 9


_INDEX_TYPES = ((1 << 8, "<u1", 0), (1 << 16, "<u2", 1), (1 << 32, "<u4", 2), (1 << 64, "<u8", 3))


def _low_cardinality(inner: str, values: Sequence[Any]) -> bytes:
    """LowCardinality(inner) values (after the prefix): one granule that carries its own dictionary, as
    "additional keys" (no shared dictionary): index type and flags, key count, the keys in the layout of
    `inner` without Nullable, row count, each row's key position. For LowCardinality(Nullable(T)) key 0 stands
    for NULL (its value is not read; T's default fills the slot)."""
    n = len(values)
    if n == 0:
        return b""      # the server writes nothing for an empty column either (e.g. arrays all empty)
    nullable_of = _wrapped(inner, "Nullable")
    base = nullable_of or inner
    position: dict[Any, int] = {None: 0} if nullable_of is not None else {}
    for value in dict.fromkeys(values):
        position.setdefault(value, len(position))
    keys = list(position)
    if nullable_of is not None:
        keys[0] = "" if base == "String" else 0
    _, dtype, code = next(t for t in _INDEX_TYPES if len(keys) <= t[0])
    indexes = np.fromiter(map(position.__getitem__, values), dtype, n)
    return b"".join((
        (code | _HAS_ADDITIONAL_KEYS).to_bytes(8, "little"), len(keys).to_bytes(8, "little"),
        _column_body(base, keys), n.to_bytes(8, "little"), indexes.tobytes(),
    ))


def _column_body(typ: str, values: Sequence[Any]) -> bytes:
    """The values of a column of type `typ`, without the state prefix (see `encode_column`)."""
    inner = _wrapped(typ, "LowCardinality")
    if inner is not None:
        return _low_cardinality(inner, values)
    inner = _wrapped(typ, "Nullable")
    if inner is not None:
        if inner in ("Float64", "Float32"):
            return _nullable_floats(inner, values)
        nulls = np.fromiter(map(is_, values, _NONE), bool, len(values))
        if not nulls.any():
            return nulls.view(np.uint8).tobytes() + _column_body(inner, values)
        filled = np.array(values, dtype=object)
        filled[nulls] = "" if inner == "String" else 0
        return nulls.view(np.uint8).tobytes() + _column_body(inner, filled.tolist())
    inner = _wrapped(typ, "Array")
    if inner is not None:
        ends = np.cumsum(np.fromiter(map(len, values), np.uint64, len(values)), dtype=np.uint64)
        return ends.astype("<u8").tobytes() + _column_body(inner, list(chain.from_iterable(values)))
    if typ == "String":
        return encode_strings(values)
    if typ == "UInt8" and isinstance(values, list):
        try:
            return bytes(values)   # bools and small ints in one C pass
        except (TypeError, ValueError):
            pass    # not all ints in 0..255: the general path below says which error it is
    dtype = _FIXED_WIDTH.get(_base_type(typ))
    if dtype is None:
        raise ValueError(f"the Native encoder does not write ClickHouse type {typ}")
    packed = _packed(dtype, values)
    if packed is not None:
        return packed
    if dtype[1] == "f":
        return np.array(values, dtype=dtype).tobytes()
    # through (u)int64 first, then a range check: a value out of range raises instead of wrapping around
    as_int = np.array(values, dtype=np.uint64 if dtype == "<u8" else np.int64)
    if as_int.size and dtype != "<u8":
        info = np.iinfo(np.dtype(dtype))
        if as_int.min() < info.min or as_int.max() > info.max:
            raise OverflowError(f"a value does not fit ClickHouse type {typ}")
    return as_int.astype(dtype).tobytes()


# struct packs a list of Python numbers about twice as fast as numpy converts it, and checks the range
_STRUCT_CODES = {"<u1": "B", "<u2": "H", "<u4": "I", "<u8": "Q", "<i1": "b", "<i2": "h", "<i4": "i", "<i8": "q",
                 "<f8": "d"}


def _packed(dtype: str, values: Sequence[Any]) -> bytes | None:
    """`values` packed little-endian at `dtype`'s width, or None when struct refuses one (out of range, not a
    number, None): the caller's numpy path then raises the precise error or applies its conversions."""
    code = _STRUCT_CODES.get(dtype)
    if code is None:
        return None
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except struct.error:
        return None


def _nullable_floats(typ: str, values: Sequence[float | None]) -> bytes:
    """Nullable(Float64/32): null map, then the values with 0 in the NULL slots. NaN readings stay NaN."""
    n = len(values)
    floats: np.ndarray[Any, np.dtype[np.float64]] | None = None
    if typ == "Float64":
        packed = _packed("<f8", values)
        if packed is not None:          # no NULL at all (coordinates, mostly)
            return bytes(n) + packed
        packed = _packed("<f8", [_NAN if v is None else v for v in values])
        if packed is not None:
            floats = np.frombuffer(packed, np.float64).copy()
    if floats is None:
        floats = np.array(values, dtype=np.float64)     # None becomes NaN
    nan = np.isnan(floats)
    if not nan.any():
        return bytes(n) + floats.astype(_FIXED_WIDTH[typ]).tobytes()
    if int(np.count_nonzero(nan)) != values.count(None):    # NaN readings too: only the values tell them apart
        nan = np.fromiter(map(is_, values, _NONE), bool, n)
    floats[nan] = 0.0
    return nan.view(np.uint8).tobytes() + floats.astype(_FIXED_WIDTH[typ]).tobytes()


def encode_block(columns: Sequence[str], types: Sequence[str], data: Sequence[Sequence[Any]]) -> bytes:
    """A whole block in ClickHouse's Native format (what `INSERT ... FORMAT Native` reads)."""
    if not (len(columns) == len(types) == len(data)):
        raise ValueError("columns, types and data differ in length")
    n = len(data[0]) if data else 0
    parts = [_varint(len(columns)), _varint(n)]
    for name, typ, values in zip(columns, types, data, strict=True):
        if len(values) != n:
            raise ValueError(f"column {name} has {len(values)} values, the block {n} rows")
        parts += [_text(name), _text(typ), encode_column(typ, values)]
    return b"".join(parts)
