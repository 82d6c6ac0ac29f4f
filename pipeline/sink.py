"""The ClickHouse sink: the only module that talks to ClickHouse (clickhouse-driver, and its HTTP interface).

Three pieces:

- `ClickHouse(settings)`: a small query wrapper over the native protocol (connection with the TLS and credential
  settings, `execute`, `query_dicts`, columnar `insert_columns`), used by migrations and reports as well.
- `ClickHouseHttp(settings)`: the fast insert path. The same `insert_columns` call, but the block is encoded
  here in ClickHouse's Native format (column after column; numbers packed in one C-level call, strings
  length-prefixed in bulk, LowCardinality and Nullable as the table declares) and sent as
  `INSERT ... FORMAT Native` over the HTTP interface. The server parses
  the block with no per-value text parsing; the driver's per-value Python loops (nullable, DateTime columns)
  are gone. Its port: CITYOPS_CLICKHOUSE_HTTP_PORT, else the server's default beside the native port
  (19000 -> 18123 local stack, 9000 -> 8123, 9440 -> 8443); `0` turns the HTTP path off.
- `ClickHouseSink(settings)`: stores a `SinkBatch` (pipeline.records) with columnar inserts. A batch holds rows
  (EventRow, ...) and/or column builders (`EventColumns`, `ReadingColumns`: one list per column, filled row by
  row by a stage, times as epoch seconds); builders skip the row→column conversion, which costs about as
  much as encoding and sending (`python -m pipeline.sink_bench` compares both forms). `write` returns
  only when every row is stored; while the server is down or slow it retries with capped exponential
  backoff, which blocks the calling worker (that blocking *is* the backpressure: the worker reads no more
  input and commits no offsets until the batch is stored). `stop()` makes a waiting `write` raise
  `SinkStopped`, so a worker that shuts down never commits the offsets of a batch that was not stored.

The sink inserts over HTTP when an HTTP port is known, else over the native protocol (`transport=` forces one).
If the HTTP port refuses connections while the native port answers (a site that closed it), the sink logs a
warning once and stays on the native protocol: slower, never stuck.

`SinkBuffer` collects worker batches and the Kafka offsets they came from and says when a flush is due (by
row count or age); see `SinkBuffer.flush` for the order "store, then commit".

Replays are harmless: every table de-duplicates by its stable key (ReplacingMergeTree, see
pipeline/migrations/0001_core_tables.sql), and a batch is de-duplicated by key before it is sent (rows and
builders of a table together: the last copy of a key wins, builders' rows counting after the rows), so a
batch retried after a half-finished attempt, or replayed from Kafka, adds no logical row.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import random
import re
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import numpy as np
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from pipeline.config import Settings
from pipeline.records import (
    CaseRow,
    Columns,
    EventRow,
    RoundRow,
    SensorReadingRow,
    SinkBatch,
    TransitionRow,
    epoch_seconds,
)

log = logging.getLogger("cityops.sink")


def quiet_driver_logs() -> None:
    """For command-line tools: the driver logs each failed connect with a traceback; our errors say it."""
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)

Row = TypeVar("Row", CaseRow, EventRow, TransitionRow, SensorReadingRow, RoundRow)


class SinkStopped(Exception):
    """`stop()` was called while `write` was still trying: the batch may not be stored; don't commit it."""


class SinkRejected(Exception):
    """The server refused a batch for a reason a retry cannot fix (schema or data error); names the table."""


# Server error codes that mean "try again later": the server is overloaded, restarting, or the schema is
# being migrated right now (unknown table/database while `db migrate` runs on a fresh deploy).
_RETRYABLE_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    60,   # UNKNOWN_TABLE (deploy ordering: the migration job has not run yet)
    81,   # UNKNOWN_DATABASE (same)
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY (a replica that lost its coordinator)
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
})


def is_retryable(err: BaseException) -> bool:
    """True when `err` means the server is unreachable, slow or busy (retry), not that the data is wrong."""
    if isinstance(err, ch_errors.ServerException):
        return err.code in _RETRYABLE_CODES
    return isinstance(err, ch_errors.NetworkError | ch_errors.SocketTimeoutError | EOFError | OSError
                      | ch_errors.UnexpectedPacketFromServerError | http.client.HTTPException)


class QueryError(Exception):
    """A query failed or the server could not be reached; the message names the server and database."""


class ClickHouse:
    """A ClickHouse connection over the native protocol, configured from Settings.

    Not shared between threads without care: calls are serialized by a lock. The connection is opened on
    first use and re-opened after a network error.
    """

    def __init__(self, settings: Settings, database: str | None = None, *, connect_timeout: float = 5.0,
                 send_receive_timeout: float = 60.0) -> None:
        self.database = database or settings.clickhouse_database
        options: dict[str, Any] = {
            "host": settings.clickhouse_host, "port": settings.clickhouse_port,
            "user": settings.clickhouse_user, "password": settings.clickhouse_password,
            "database": self.database, "client_name": "cityops",
            "connect_timeout": connect_timeout, "send_receive_timeout": send_receive_timeout,
            "sync_request_timeout": connect_timeout,
        }
        if settings.clickhouse_secure:
            options["secure"] = True
            options["verify"] = True
            if settings.clickhouse_ca_certs:
                options["ca_certs"] = settings.clickhouse_ca_certs
        self._client = Client(**options)
        self._where = f"{settings.clickhouse_host}:{settings.clickhouse_port}"
        self._lock = threading.Lock()

    def execute(self, sql: str,
                params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; `%(name)s` parameters are escaped by the driver, never pasted as text.
        Raises QueryError (server unreachable, or the statement failed)."""
        with self._lock, self._explained():
            rows: list[tuple[Any, ...]] = self._client.execute(sql, params)
        return rows

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT; each row as a dict keyed by the result's column names. Raises QueryError."""
        with self._lock, self._explained():
            rows, columns = self._client.execute(sql, params, with_column_types=True)
        names = [c[0] for c in columns]
        return [dict(zip(names, row, strict=True)) for row in rows]

    @contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except (ch_errors.Error, OSError, EOFError) as err:
            where = f"ClickHouse {self._where}/{self.database}"
            detail = " ".join(str(err).split()).split(" Stack trace:")[0][:400] or type(err).__name__
            if isinstance(err, ch_errors.ServerException) and err.code in (60, 81):
                detail += " (is the schema migrated? run `cityops db migrate`)"
            raise QueryError(f"{where}: {detail}") from err

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> int:
        """Insert one columnar block into `table` (names come from code, not users); returns the row count.

        `data` is left as it was: the driver overwrites a Nullable column's NULLs in the list it is given, so
        it gets copies (a retry of the same block, or a column builder's own lists, must keep their NULLs).
        """
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        copies = [list(values) for values in data]
        with self._lock:
            n: int = self._client.execute(sql, copies, columnar=True, types_check=False)
        return n

    def insert_dicts(self, table: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> int:
        """Row-wise insert of dicts (small writes; the benchmark's naive baseline). The sink is columnar."""
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        with self._lock:
            n: int = self._client.execute(sql, rows)
        return n

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()


def render_query(sql: str, params: dict[str, Any] | None) -> str:
    """The text the driver would send for `sql` with `params` (for engines reached without the driver, e.g.
    chdb in tests). Values are escaped by the driver's own rules."""
    if not params:
        return sql
    client = Client(host="127.0.0.1")  # never connects: only its escaping context is used
    text: str = client.substitute_params(sql, params, client.connection.context)
    return text


# ---- the Native block format (the fast path's body) ----------------------------------------------------
# A block is: varint column count, varint row count, then per column its name, its type and its values in
# ClickHouse's binary column layout (little-endian fixed width; String = varint length + UTF-8 bytes;
# Nullable = one null byte per row, then the values with 0 / '' in the null slots; Array = cumulative UInt64
# end offsets, then the flattened items). Every step below is one C-level pass over a column.

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


# ---- the HTTP insert path ----------------------------------------------------------------------------------

_DEFAULT_HTTP_PORTS = {19000: 18123, 9000: 8123, 9440: 8443}   # deploy/local's ports, then ClickHouse's own
_ERROR_CODE = re.compile(rb"Code: (\d+)")


def http_port(settings: Settings, env: Mapping[str, str] | None = None) -> int | None:
    """The HTTP port of the server `settings` name, or None when the sink should use the native protocol.

    CITYOPS_CLICKHOUSE_HTTP_PORT wins (`0` means "no HTTP"); else the server's HTTP port that pairs with the
    native port (19000 -> 18123 of the local stack, 9000 -> 8123, 9440 -> 8443); else None.
    """
    value = (os.environ if env is None else env).get("CITYOPS_CLICKHOUSE_HTTP_PORT", "").strip()
    if value:
        port = int(value)
        return port or None
    return _DEFAULT_HTTP_PORTS.get(settings.clickhouse_port)


class ClickHouseHttp:
    """Columnar inserts over ClickHouse's HTTP interface, the body in the Native format (see `encode_block`).

    `insert_columns(table, columns, data)` takes what `ClickHouse.insert_columns` takes (to_columns output).
    Column types are read once per table from `system.columns` (so the encoder writes exactly what the table
    declares) and read again after any failure, in case a migration changed them. Credentials travel as HTTP
    basic auth; with `clickhouse_secure` the connection is HTTPS, verified against `clickhouse_ca_certs` or
    the system's CAs. Server errors are raised as the driver's `ServerException` with the server's code, so
    `is_retryable` classifies them like native ones; network failures are OSError / HTTPException.
    """

    def __init__(self, settings: Settings, database: str | None = None, *, port: int | None = None,
                 timeout: float = 60.0) -> None:
        found = port or http_port(settings)
        if found is None:
            raise ValueError("no ClickHouse HTTP port: set CITYOPS_CLICKHOUSE_HTTP_PORT")
        self.database = database or settings.clickhouse_database
        self.port = found
        self._host = settings.clickhouse_host
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if settings.clickhouse_secure:
            self._ssl = ssl.create_default_context(cafile=settings.clickhouse_ca_certs)
        token = f"{settings.clickhouse_user}:{settings.clickhouse_password}".encode()
        self._auth = "Basic " + base64.b64encode(token).decode()
        self._conn: http.client.HTTPConnection | None = None
        self._types: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self._host}:{self.port}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self._host, self.port, timeout=self._timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self.port, timeout=self._timeout)
        return self._conn

    def _post(self, sql: str, body: bytes = b"") -> bytes:
        """Run `sql` with `body` as its input; the response body.

        One connection per request, closed after it: a kept-alive connection would keep a server that is
        shutting down serving us (and delay its shutdown), where a new one is refused and the sink waits
        like in any outage. A handshake per 50,000-row block costs nothing measurable.
        """
        path = "/?" + urlencode({"database": self.database, "query": sql})
        try:
            conn = self._connection()
            conn.request("POST", path, body=body, headers={
                "Authorization": self._auth, "Content-Type": "application/octet-stream", "Connection": "close",
            })
            response = conn.getresponse()
            data = response.read()
        finally:
            self._drop()
        if response.status != 200:
            raise _server_error(response.status, data, self.where)
        return data

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def column_types(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type of `table` in this database (cached)."""
        types = self._types.get(table)
        if types is None:
            sql = render_query("SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s "
                               "FORMAT TabSeparated", {"db": self.database, "t": table})
            lines = self._post(sql).decode().splitlines()
            types = dict(line.split("\t", 1) for line in lines if line)
            if not types:
                # the same meaning as the native protocol's UNKNOWN_TABLE: retried (migrations may be running)
                raise ch_errors.ServerException(f"Table {self.database}.{table} doesn't exist.", code=60)
            self._types[table] = types
        return types

    def insert_columns(self, table: str, columns: Sequence[str], data: list[list[Any]]) -> int:
        """Insert one columnar block into `table` (names come from code, not users); returns the row count."""
        with self._lock:
            try:
                types = self.column_types(table)
                missing = [c for c in columns if c not in types]
                if missing:
                    raise ch_errors.ServerException(f"{table} has no column {', '.join(missing)}", code=16)
                body = encode_block(columns, [types[c] for c in columns], data)
                self._post(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT Native", body)
            except BaseException:
                self._types.pop(table, None)
                raise
        return len(data[0]) if data else 0

    def close(self) -> None:
        with self._lock:
            self._drop()


def _server_error(status: int, body: bytes, where: str) -> Exception:
    """The server's refusal as a `ServerException` with its code (no code: 502-504 mean "busy", else data)."""
    text = " ".join(body.decode(errors="replace").split())[:400]
    found = _ERROR_CODE.search(body)
    # no code: the answer came from a proxy in front; 502-504 mean it is waiting (209 SOCKET_TIMEOUT: retried)
    code = int(found.group(1)) if found else 209 if status in (502, 503, 504) else 0
    err: Exception = ch_errors.ServerException(f"{where}: HTTP {status}: {text}", code=code)
    return err


# ---- rows to columns ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)
_epoch = epoch_seconds      # seconds since the epoch; a naive datetime is UTC (DESIGN.md: times are UTC)


def _epoch_or_none(dt: datetime | None) -> int | None:
    return None if dt is None else _epoch(dt)


@dataclass(frozen=True)
class TableSpec:
    """How one row type is stored: table, columns (= row attributes), its stable key (a row's key; the key's
    columns) and converters for some columns."""

    table: str
    columns: tuple[str, ...]
    key: Callable[[Any], Any]
    convert: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    key_columns: tuple[str, ...] = ()


_CASES = TableSpec(
    "cases",
    ("case_id", "category", "discovered_by", "cell", "subdistrict", "grid_kind", "team", "status", "priority",
     "created_at", "due_at", "closed_at", "reports", "sources", "reopened", "rule_id", "ruleset_version",
     "grid_version", "revision", "kind", "sensor_id", "recurrence_of", "previous_closed_at", "first_dispatched_at",
     "case_due_at", "resolved_at", "verify_due_at", "rejected", "escalations"),
    key=attrgetter("case_id"),
    convert={"created_at": _epoch, "due_at": _epoch_or_none, "closed_at": _epoch_or_none, "sources": list,
             "previous_closed_at": _epoch_or_none, "first_dispatched_at": _epoch_or_none,
             "case_due_at": _epoch_or_none, "resolved_at": _epoch_or_none, "verify_due_at": _epoch_or_none},
    key_columns=("case_id",),
)
_ROUNDS = TableSpec(
    "case_rounds",
    ("case_id", "round", "team", "kind", "rule_id", "priority", "dispatched_at", "due_at", "accept_due_at",
     "accepted_at", "resolved_at", "ended_at", "outcome", "escalated_at", "verify_due_at", "verified_at",
     "verified_by", "verify_escalated_at", "category", "case_kind", "cell", "subdistrict", "revision"),
    key=attrgetter("case_id", "round"),
    convert={"dispatched_at": _epoch, "due_at": _epoch, "accept_due_at": _epoch, "accepted_at": _epoch_or_none,
             "resolved_at": _epoch_or_none, "ended_at": _epoch_or_none, "escalated_at": _epoch_or_none,
             "verify_due_at": _epoch_or_none, "verified_at": _epoch_or_none,
             "verify_escalated_at": _epoch_or_none},
    key_columns=("case_id", "round"),
)
_EVENTS = TableSpec(
    "events",
    ("event_id", "source", "case_id", "category", "cell", "subdistrict", "grid_kind", "received_at",
     "ingested_at", "lon", "lat", "snapped", "merged", "grid_version", "request_type", "sensor_type", "value",
     "description", "address", "address_id", "media_url", "attributes"),
    key=attrgetter("event_id"),
    # snapped/merged stay bools: the UInt8 writer packs True/False as 1/0 without a per-row conversion.
    convert={"received_at": _epoch, "ingested_at": _epoch},
    key_columns=("event_id",),
)
_TRANSITIONS = TableSpec(
    "case_transitions", ("case_id", "seq", "status", "team", "actor", "at", "reason", "photo_url"),
    key=attrgetter("case_id", "seq"), convert={"at": _epoch}, key_columns=("case_id", "seq"),
)
_READINGS = TableSpec(
    "sensor_readings",
    ("sensor_id", "sensor_type", "minute", "readings", "last_value", "max_value", "cell", "registered"),
    # registered stays a bool, like events' snapped/merged (the UInt8 writer packs True/False as 1/0)
    key=attrgetter("sensor_id", "minute"), convert={"minute": _epoch}, key_columns=("sensor_id", "minute"),
)

# The notifier's attempts (pipeline.notify.ledger.NotificationRow), stored with `ClickHouseSink.write_rows`.
NOTIFICATIONS = TableSpec(
    "notifications",
    ("delivery_id", "attempt", "assignment_id", "case_id", "target", "channel", "channel_kind", "kind", "priority",
     "status", "error", "sent_at", "latency_ms", "since_assignment_ms"),
    key=attrgetter("delivery_id", "attempt"), convert={"sent_at": _epoch}, key_columns=("delivery_id", "attempt"),
)


def dedup(rows: Sequence[Row], key: Callable[[Row], Any],
          version: Callable[[Row], int] | None = None) -> list[Row]:
    """One row per key: the highest `version` (cases: revision), else the last one seen (a replay repeats
    the same content, so which copy wins does not matter)."""
    if version is None:
        return list(dict(zip(map(key, rows), rows, strict=True)).values())   # C speed; last copy wins
    best: dict[Any, Row] = {}
    for row in rows:
        k = key(row)
        old = best.get(k)
        if old is None or version(row) >= version(old):
            best[k] = row
    return list(best.values())


_SECOND = timedelta(seconds=1)
_TZINFO = attrgetter("tzinfo")


def _epochs(values: list[datetime]) -> list[int]:
    """Many `_epoch`s at once, in C-level passes: aware times (the worker's) by `timestamp()`, naive ones (UTC)
    by their distance from the epoch, a mixed list item by item. Flooring the float seconds is exact: with
    microsecond resolution the fraction stays at least 1e-6 below the next second, far more than a double's
    rounding error for times up to 2106 (the end of DateTime)."""
    if not values:
        return []
    zones = list(map(_TZINFO, values))
    if None not in zones:
        seconds = np.fromiter(map(datetime.timestamp, values), np.float64, len(values))
    elif zones.count(None) == len(zones):
        deltas = map(datetime.__sub__, values, repeat(_EPOCH))
        seconds = np.fromiter(map(timedelta.total_seconds, deltas), np.float64, len(values))
    else:
        return [_epoch(v) for v in values]
    out: list[int] = np.floor(seconds).astype(np.int64).tolist()
    return out


def to_columns(spec: TableSpec, rows: Sequence[Any]) -> list[list[Any]]:
    """Rows as one list per column, converted to what the driver writes without further checks."""
    columns: list[list[Any]] = []
    for name in spec.columns:
        values = list(map(attrgetter(name), rows))
        conv = spec.convert.get(name)
        if conv is _epoch:
            values = _epochs(values)
        elif conv is not None:
            values = list(map(conv, values))
        columns.append(values)
    return columns


def dedup_columns(spec: TableSpec, columns: list[list[Any]]) -> list[list[Any]]:
    """One row per key, like `dedup` without `version` does for rows: the last row of each key, in the order
    the keys first appear. Columns without a repeated key are returned as they are (no copy)."""
    at = [spec.columns.index(name) for name in spec.key_columns]
    keys: Iterable[Any] = columns[at[0]] if len(at) == 1 else zip(*(columns[i] for i in at), strict=True)
    n = len(columns[at[0]])
    last = dict(zip(keys, range(n), strict=True))      # key -> index of its last row, keys in first-seen order
    if len(last) == n:
        return columns
    keep = list(last.values())
    return [list(map(values.__getitem__, keep)) for values in columns]


def _table_columns(spec: TableSpec, rows: Sequence[Any], built: Columns | None = None) -> list[list[Any]]:
    """A table's rows and builder columns as one block of columns in `spec.columns` order, de-duplicated."""
    columns = to_columns(spec, rows)
    if built is not None and len(built):
        lists = built.lists()
        try:
            built.check()
            extra = [lists[name] for name in spec.columns]
        except (KeyError, ValueError) as err:
            raise SinkRejected(f"{spec.table}: {type(built).__name__} does not fit the table: {err}") from err
        columns = [values + more for values, more in zip(columns, extra, strict=True)] if rows else extra
    return dedup_columns(spec, columns)


def batch_columns(batch: SinkBatch) -> list[tuple[TableSpec, list[list[Any]]]]:
    """The batch per table as columns (rows converted, column builders joined), de-duplicated by stable key,
    in the order they are written. Rounds and cases go last (see `batch_blocks`); their highest revision wins."""
    rounds = dedup(batch.rounds, _ROUNDS.key, attrgetter("revision"))
    cases = dedup(batch.cases, _CASES.key, attrgetter("revision"))
    return [
        (_EVENTS, _table_columns(_EVENTS, batch.events, batch.event_columns)),
        (_TRANSITIONS, _table_columns(_TRANSITIONS, batch.transitions)),
        (_READINGS, _table_columns(_READINGS, batch.readings, batch.reading_columns)),
        (_ROUNDS, to_columns(_ROUNDS, rounds)),
        (_CASES, to_columns(_CASES, cases)),
    ]


def batch_blocks(batch: SinkBatch) -> list[tuple[TableSpec, list[Any]]]:
    """The batch's rows per table, de-duplicated by stable key, in the order they are written.

    Rounds, then cases go last: a report that sees a case's latest state will then also see its events,
    transitions and dispatch rounds (the service-level figures join a case's state to its rounds).
    """
    return [
        (_EVENTS, dedup(batch.events, _EVENTS.key)),
        (_TRANSITIONS, dedup(batch.transitions, _TRANSITIONS.key)),
        (_READINGS, dedup(batch.readings, _READINGS.key)),
        (_ROUNDS, dedup(batch.rounds, _ROUNDS.key, attrgetter("revision"))),
        (_CASES, dedup(batch.cases, _CASES.key, attrgetter("revision"))),
    ]


# ---- the sink --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: initial * factor**n, at most `cap` seconds."""

    initial_s: float = 0.2
    factor: float = 2.0
    cap_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.cap_s, self.initial_s * self.factor ** max(0, attempt))
        return base * (1.0 + random.uniform(-self.jitter, self.jitter))


Transport = Literal["http", "native"]


class ClickHouseSink:
    """Stores SinkBatches; see the module docstring for the contract.

    `write` may be called from a worker thread (e.g. `loop.run_in_executor`); concurrent writes are
    serialized. Counters: `retries` (failed attempts that were retried), `rows_written`, `batches_written`.
    `transport`: "http" (Native blocks over the HTTP interface, the fast path) or "native" (the driver's
    columnar insert); by default HTTP when `http_port(settings)` knows a port. `client` replaces the writer
    (anything with `insert_columns` and `close`), e.g. a fake in tests.
    """

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 client: ClickHouse | None = None, transport: Transport | None = None) -> None:
        self._settings = settings
        self._native: ClickHouse | None = client
        self._db: ClickHouse | ClickHouseHttp
        if client is not None:
            self._db = client
        elif transport == "http" or (transport is None and http_port(settings) is not None):
            self._db = ClickHouseHttp(settings)
        else:
            self._db = self._native = ClickHouse(settings)
        self.transport: Transport = "http" if isinstance(self._db, ClickHouseHttp) else "native"
        self._may_fall_back = transport is None and self.transport == "http"
        self._refused_while_native_answers = 0
        self._backoff = backoff or Backoff()
        self._stopped = threading.Event()
        self._write_lock = threading.Lock()
        self.retries = 0
        self.rows_written = 0
        self.batches_written = 0

    def write(self, batch: SinkBatch) -> None:
        """Store every row of `batch`; return only when all are stored.

        Raises SinkStopped if `stop()` was called before the batch was stored, SinkRejected if the server
        refuses the data itself (not retried: the same data would fail again).
        """
        with self._write_lock:
            for spec, data in batch_columns(batch):
                if data[0]:
                    self._insert(spec, data)
            self.batches_written += 1

    def write_rows(self, spec: TableSpec, rows: Sequence[Any]) -> None:
        """Store `rows` of one table outside a SinkBatch (e.g. the notifier's `NOTIFICATIONS`), de-duplicated by
        the spec's key; the same retries, refusals and `stop()` as `write`."""
        if not rows:
            return
        with self._write_lock:
            self._insert(spec, dedup_columns(spec, to_columns(spec, rows)))
            self.batches_written += 1

    def _insert(self, spec: TableSpec, data: list[list[Any]]) -> None:
        n = len(data[0])
        attempt = 0
        while True:
            if self._stopped.is_set():
                raise SinkStopped(f"sink stopped before {n} rows were stored in {spec.table}")
            try:
                self._db.insert_columns(spec.table, spec.columns, data)
                self.rows_written += n
                return
            except Exception as err:
                if not is_retryable(err):
                    raise SinkRejected(f"{spec.table}: {n} rows refused: {err}") from err
                if isinstance(err, ConnectionRefusedError) and self._fall_back_to_native():
                    continue
                delay = self._backoff.delay(attempt)
                attempt += 1
                self.retries += 1
                log.warning("sink: insert into %s failed (attempt %d, %s: %s); retrying in %.1fs",
                            spec.table, attempt, type(err).__name__, str(err).splitlines()[0][:200], delay)
                if self._stopped.wait(delay):
                    raise SinkStopped(f"sink stopped before {n} rows were stored in {spec.table}") from err

    def _fall_back_to_native(self) -> bool:
        """The HTTP port refused: if the native port answers, three times in a row (a restarting server may
        open its ports one after the other), use it from now on. True: retry at once."""
        if not self._may_fall_back:
            return False
        native = ClickHouse(self._settings, connect_timeout=2.0)
        try:
            native.execute("SELECT 1")
        except QueryError:
            native.close()
            self._refused_while_native_answers = 0
            return False    # the whole server is down: keep HTTP and wait like any outage
        self._refused_while_native_answers += 1
        if self._refused_while_native_answers < 3:
            native.close()
            return False
        assert isinstance(self._db, ClickHouseHttp)
        log.warning("sink: ClickHouse HTTP port %s refuses connections but the native port answers; using "
                    "the native protocol (slower). Set CITYOPS_CLICKHOUSE_HTTP_PORT to the server's HTTP port, "
                    "or 0 to silence this.", self._db.where)
        self._db.close()
        self._db = self._native = native
        self.transport, self._may_fall_back = "native", False
        return True

    def stop(self) -> None:
        """Make a waiting or future `write` raise SinkStopped (call from any thread)."""
        self._stopped.set()

    def close(self) -> None:
        self.stop()
        self._db.close()


Offsets = dict[tuple[str, int], int]


class SinkBuffer:
    """Worker batches waiting to be stored, with the Kafka offsets they cover.

    `add` merges a batch in (rows and column builders alike); `due(now)` says whether to flush (at least
    `max_rows` rows, or the oldest row waited `max_age_s`); `flush(sink, commit)` stores everything, then
    commits the offsets (the highest per partition) and empties the buffer. When the store fails nothing is
    committed and the buffer keeps its rows, so the next flush sends them again.
    """

    def __init__(self, max_rows: int = 50_000, max_age_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._clock = clock
        self._batch = SinkBatch()
        self._offsets: Offsets = {}
        self._since: float | None = None

    def __len__(self) -> int:
        return len(self._batch)

    def add(self, batch: SinkBatch, offsets: Offsets | None = None) -> None:
        if self._since is None and len(batch):
            self._since = self._clock()
        self._batch.cases.extend(batch.cases)
        self._batch.events.extend(batch.events)
        self._batch.transitions.extend(batch.transitions)
        self._batch.readings.extend(batch.readings)
        self._batch.rounds.extend(batch.rounds)
        self._batch.event_columns.extend(batch.event_columns)
        self._batch.reading_columns.extend(batch.reading_columns)
        for tp, offset in (offsets or {}).items():
            self._offsets[tp] = max(offset, self._offsets.get(tp, offset))

    def due(self) -> bool:
        if len(self._batch) >= self.max_rows:
            return True
        return self._since is not None and self._clock() - self._since >= self.max_age_s

    def flush(self, sink: ClickHouseSink, commit: Callable[[Offsets], None]) -> int:
        """Store, then commit; return the rows stored. Offsets alone (only dead letters) still commit."""
        n = len(self._batch)
        if n:
            sink.write(self._batch)
        if self._offsets:
            commit(dict(self._offsets))
        self._batch, self._offsets, self._since = SinkBatch(), {}, None
        return n
