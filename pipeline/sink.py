"""The ClickHouse sink: the only module that imports clickhouse-driver.

Two pieces:

- `ClickHouse(settings)`: a small query wrapper (connection with the TLS and credential settings, `execute`,
  `query_dicts`, columnar `insert_columns`), used by migrations and reports as well.
- `ClickHouseSink(settings)`: stores a `SinkBatch` (pipeline.records) with columnar inserts. `write` returns
  only when every row is stored; while the server is down or slow it retries with capped exponential
  backoff, which blocks the calling worker (that blocking *is* the backpressure: the worker reads no more
  input and commits no offsets until the batch is stored). `stop()` makes a waiting `write` raise
  `SinkStopped`, so a worker that shuts down never commits the offsets of a batch that was not stored.

`SinkBuffer` collects worker batches and the Kafka offsets they came from and says when a flush is due (by
row count or age); see `SinkBuffer.flush` for the order "store, then commit".

Replays are harmless: every table de-duplicates by its stable key (ReplacingMergeTree, see
pipeline/migrations/0001_core_tables.sql), and a batch is de-duplicated by key before it is sent, so a batch
retried after a half-finished attempt, or replayed from Kafka, adds no logical row.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, TypeVar

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from pipeline.config import Settings
from pipeline.records import CaseRow, EventRow, SensorReadingRow, SinkBatch, TransitionRow

log = logging.getLogger("cityops.sink")


def quiet_driver_logs() -> None:
    """For command-line tools: the driver logs each failed connect with a traceback; our errors say it."""
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)

Row = TypeVar("Row", CaseRow, EventRow, TransitionRow, SensorReadingRow)


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
                      | ch_errors.UnexpectedPacketFromServerError)


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

    def insert_columns(self, table: str, columns: Sequence[str], data: list[list[Any]]) -> int:
        """Insert one columnar block into `table` (names come from code, not users); returns the row count."""
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        with self._lock:
            n: int = self._client.execute(sql, data, columnar=True, types_check=False)
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


# ---- rows to columns ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)


def _epoch(dt: datetime) -> int:
    """Seconds since the epoch; a naive datetime is UTC (DESIGN.md: times are UTC in storage)."""
    if dt.tzinfo is None:
        return int((dt - _EPOCH).total_seconds())
    return int(dt.timestamp())


def _epoch_or_none(dt: datetime | None) -> int | None:
    return None if dt is None else _epoch(dt)


@dataclass(frozen=True)
class TableSpec:
    """How one row type is stored: table, columns (= row attributes) and converters for some columns."""

    table: str
    columns: tuple[str, ...]
    key: Callable[[Any], Any]
    convert: dict[str, Callable[[Any], Any]] = field(default_factory=dict)


_CASES = TableSpec(
    "cases",
    ("case_id", "category", "discovered_by", "cell", "subdistrict", "grid_kind", "team", "status", "priority",
     "created_at", "due_at", "closed_at", "reports", "sources", "reopened", "rule_id", "ruleset_version",
     "grid_version", "revision"),
    key=attrgetter("case_id"),
    convert={"created_at": _epoch, "due_at": _epoch_or_none, "closed_at": _epoch_or_none, "sources": list},
)
_EVENTS = TableSpec(
    "events",
    ("event_id", "source", "case_id", "category", "cell", "subdistrict", "grid_kind", "received_at",
     "ingested_at", "lon", "lat", "snapped", "merged", "grid_version", "request_type", "sensor_type", "value",
     "description"),
    key=attrgetter("event_id"),
    # snapped/merged stay bools: the UInt8 writer packs True/False as 1/0 without a per-row conversion.
    convert={"received_at": _epoch, "ingested_at": _epoch},
)
_TRANSITIONS = TableSpec(
    "case_transitions", ("case_id", "seq", "status", "team", "actor", "at", "reason"),
    key=attrgetter("case_id", "seq"), convert={"at": _epoch},
)
_READINGS = TableSpec(
    "sensor_readings", ("sensor_id", "sensor_type", "minute", "readings", "last_value", "max_value", "cell"),
    key=attrgetter("sensor_id", "minute"), convert={"minute": _epoch},
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


def _epochs(values: list[datetime]) -> list[int]:
    """Many `_epoch`s at once. Naive times (the pipeline's UTC) take one subtraction and one floor
    division each, the cheapest exact form in pure Python; aware ones the per-item path."""
    epoch, second = _EPOCH, _SECOND
    try:
        return [(v - epoch) // second for v in values]
    except TypeError:  # an aware datetime cannot be subtracted from the naive epoch: take the exact path
        return [_epoch(v) for v in values]


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


def batch_blocks(batch: SinkBatch) -> list[tuple[TableSpec, list[Any]]]:
    """The batch's rows per table, de-duplicated by stable key, in the order they are written.

    Cases go last: a report that sees a case's latest state will then also see its events and transitions.
    """
    return [
        (_EVENTS, dedup(batch.events, _EVENTS.key)),
        (_TRANSITIONS, dedup(batch.transitions, _TRANSITIONS.key)),
        (_READINGS, dedup(batch.readings, _READINGS.key)),
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


class ClickHouseSink:
    """Stores SinkBatches; see the module docstring for the contract.

    `write` may be called from a worker thread (e.g. `loop.run_in_executor`); concurrent writes are
    serialized. Counters: `retries` (failed attempts that were retried), `rows_written`, `batches_written`.
    """

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 client: ClickHouse | None = None) -> None:
        self._db = client or ClickHouse(settings)
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
            for spec, rows in batch_blocks(batch):
                if rows:
                    self._insert(spec, rows)
            self.batches_written += 1

    def _insert(self, spec: TableSpec, rows: list[Any]) -> None:
        data = to_columns(spec, rows)
        attempt = 0
        while True:
            if self._stopped.is_set():
                raise SinkStopped(f"sink stopped before {len(rows)} rows were stored in {spec.table}")
            try:
                self._db.insert_columns(spec.table, spec.columns, data)
                self.rows_written += len(rows)
                return
            except Exception as err:
                if not is_retryable(err):
                    raise SinkRejected(f"{spec.table}: {len(rows)} rows refused: {err}") from err
                delay = self._backoff.delay(attempt)
                attempt += 1
                self.retries += 1
                log.warning("sink: insert into %s failed (attempt %d, %s: %s); retrying in %.1fs",
                            spec.table, attempt, type(err).__name__, str(err).splitlines()[0][:200], delay)
                if self._stopped.wait(delay):
                    raise SinkStopped(f"sink stopped before {len(rows)} rows were stored in {spec.table}") \
                        from err

    def stop(self) -> None:
        """Make a waiting or future `write` raise SinkStopped (call from any thread)."""
        self._stopped.set()

    def close(self) -> None:
        self.stop()
        self._db.close()


Offsets = dict[tuple[str, int], int]


class SinkBuffer:
    """Worker batches waiting to be stored, with the Kafka offsets they cover.

    `add` merges a batch in; `due(now)` says whether to flush (at least `max_rows` rows, or the oldest row
    waited `max_age_s`); `flush(sink, commit)` stores everything, then commits the offsets (the highest
    per partition) and empties the buffer. When the store fails nothing is committed and the buffer keeps
    its rows, so the next flush sends them again.
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
