"""The two ways to ClickHouse: `ClickHouse` (the native protocol through clickhouse-driver: queries, migrations,
reports, columnar inserts) and `ClickHouseHttp` (the fast insert path: a Native-format block,
pipeline.sink.native, sent as `INSERT ... FORMAT Native` over HTTP). Its port: CITYOPS_CLICKHOUSE_HTTP_PORT
(Settings.clickhouse_http_port), else the server's default beside the native port (19000 -> 18123 local stack,
9000 -> 8123, 9440 -> 8443); 0 turns the HTTP path off. Server errors keep their codes, so `is_retryable`
classifies both alike.
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from pipeline.config import Settings, lazy_driver_dates

lazy_driver_dates()     # before the driver is imported

from clickhouse_driver import Client  # noqa: E402
from clickhouse_driver import errors as ch_errors  # noqa: E402

from pipeline.sink.native import (  # noqa: E402
    encode_block,
)

# clickhouse-driver logs a refused connection as a WARNING with its whole traceback; the sink says it once in its
# own words when it moves to another node (a node killed on a cluster filled the worker's log with tracebacks)
logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)


def quiet_driver_logs() -> None:
    """For command-line tools: the driver logs each failed connect with a traceback; our errors say it."""
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)


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
    225,  # NO_ZOOKEEPER (a replica whose ZooKeeper session is gone: the cluster's coordinator is down)
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    279,  # ALL_CONNECTION_TRIES_FAILED (a synchronous Distributed insert found no replica of a shard up)
    285,  # TOO_FEW_LIVE_REPLICAS (insert_quorum: a replica of the shard is down; it comes back or is replaced)
    286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE (the previous quorum insert is still being copied)
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION (ZooKeeper connection lost or session expired during the insert)
})


# ATTEMPT_TO_READ_AFTER_EOF: retryable only when the server lost another server mid-insert (a synchronous
# Distributed insert whose shard replica died: "... while receiving packet from 127.0.0.1:9000 ..."); from the
# server reading our own body it means the block is cut, and a retry would send the same bad block again.
_REMOTE_EOF = 32


def is_retryable(err: BaseException) -> bool:
    """True when `err` means the server is unreachable, slow or busy (retry), not that the data is wrong."""
    if isinstance(err, ch_errors.ServerException):
        if err.code == _REMOTE_EOF:
            return "while receiving packet from" in str(err)
        return err.code in _RETRYABLE_CODES
    return isinstance(err, ch_errors.NetworkError | ch_errors.SocketTimeoutError | EOFError | OSError
                      | ch_errors.UnexpectedPacketFromServerError | http.client.HTTPException)


def is_unreachable(err: BaseException) -> bool:
    """True when the node itself could not be reached or dropped the connection (refused, reset, timed out,
    closed mid-answer): another node of the cluster may take the insert. False when the node answered, even with
    a retryable error (read-only table, quorum, a shard it could not reach): another node would answer the same."""
    if isinstance(err, ch_errors.ServerException):
        return False
    return isinstance(err, ch_errors.NetworkError | ch_errors.SocketTimeoutError | EOFError | OSError
                      | ch_errors.UnexpectedPacketFromServerError | http.client.HTTPException)


class QueryError(Exception):
    """A query failed or the server could not be reached; the message names the server and database."""


def insert_settings(settings: Settings) -> dict[str, int]:
    """What the sink's inserts are sent with. `insert_distributed_sync`: an insert into a Distributed table returns
    only once every row is on its shard (ClickHouse's default queues the rows on the receiving node's disk and
    returns, so a node lost before it forwards them loses rows the worker has committed offsets for); no effect on
    a single server's tables. `insert_quorum` N > 1: a Replicated table returns only once N replicas have the
    block. A retried block is de-duplicated by the Replicated tables (`insert_deduplicate`, ClickHouse's default)."""
    out = {"insert_distributed_sync": 1 if settings.insert_sync else 0}
    if settings.insert_quorum > 1:
        out["insert_quorum"] = settings.insert_quorum
    return out


class ClickHouse:
    """A ClickHouse connection over the native protocol, configured from Settings.

    Not shared between threads without care: calls are serialized by a lock. The connection is opened on
    first use and re-opened after a network error. `any_node`: for readers (the web UI, the reports), which read
    the Distributed tables and may read them through any node: when the host/port node refuses a connection, the
    driver connects to the other nodes of CITYOPS_CLICKHOUSE_NODES in turn (the query that lost its connection
    fails; the next one goes elsewhere). Without it, the connection is to that one node (migrations, checks of
    one node).
    """

    def __init__(self, settings: Settings, database: str | None = None, *, connect_timeout: float = 5.0,
                 send_receive_timeout: float = 60.0, any_node: bool = False) -> None:
        self.database = database or settings.clickhouse_database
        options: dict[str, Any] = {
            "host": settings.clickhouse_host, "port": settings.clickhouse_port,
            "user": settings.clickhouse_user, "password": settings.clickhouse_password,
            "database": self.database, "client_name": "cityops",
            "connect_timeout": connect_timeout, "send_receive_timeout": send_receive_timeout,
            "sync_request_timeout": connect_timeout,
        }
        others = [f"{host}:{port}" for host, port, _ in settings.clickhouse_nodes
                  if (host, port) != (settings.clickhouse_host, settings.clickhouse_port)]
        if any_node and others:
            options["alt_hosts"] = ",".join(others)
        if settings.clickhouse_secure:
            options["secure"] = True
            options["verify"] = True
            if settings.clickhouse_ca_certs:
                options["ca_certs"] = settings.clickhouse_ca_certs
        self._client = Client(**options)
        self._insert_settings = insert_settings(settings)
        self.where = f"{settings.clickhouse_host}:{settings.clickhouse_port}"
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
            where = f"ClickHouse {self.where}/{self.database}"
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
            n: int = self._client.execute(sql, copies, columnar=True, types_check=False,
                                          settings=self._insert_settings)
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


_DEFAULT_HTTP_PORTS = {19000: 18123, 9000: 8123, 9440: 8443}   # deploy/local's ports, then ClickHouse's own


_ERROR_CODE = re.compile(rb"Code: (\d+)")


def http_port(settings: Settings) -> int | None:
    """The HTTP port of the server `settings` name, or None when the sink should use the native protocol.

    CITYOPS_CLICKHOUSE_HTTP_PORT wins (`0` means "no HTTP"); else the server's HTTP port that pairs with the
    native port (19000 -> 18123 of the local stack, 9000 -> 8123, 9440 -> 8443); else None.
    """
    if settings.clickhouse_http_port is not None:
        return settings.clickhouse_http_port or None
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
        self._insert_settings = {k: str(v) for k, v in insert_settings(settings).items()}
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

    def _post(self, sql: str, body: bytes = b"", query_settings: dict[str, str] | None = None) -> bytes:
        """Run `sql` with `body` as its input; the response body.

        One connection per request, closed after it: a kept-alive connection would keep a server that is
        shutting down serving us (and delay its shutdown), where a new one is refused and the sink waits
        like in any outage. A handshake per 50,000-row block costs nothing measurable.
        """
        path = "/?" + urlencode({"database": self.database, **(query_settings or {}), "query": sql})
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
                self._post(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT Native", body, self._insert_settings)
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
