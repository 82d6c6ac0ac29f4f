"""The ClickHouse sink: `ClickHouseSink(settings)` stores a `SinkBatch` (pipeline.model.records) with columnar
inserts. The package is the only code that talks to ClickHouse: transports in pipeline.sink.transport (native
protocol, and HTTP with blocks in the Native format of pipeline.sink.native), tables and de-duplication keys in
pipeline.sink.tables, the schema in pipeline.sink.migrate and migrations/.

A batch holds rows (EventRow, ...) and/or column builders (`EventColumns`, `ReadingColumns`: one list per column,
filled row by row by a stage, times as epoch seconds); builders skip the row→column conversion, which costs
about as much as encoding and sending (`python -m pipeline.bench.sink` compares both forms). `write` returns
only when every row is stored; while the server is down or slow it retries with capped exponential backoff,
which blocks the calling worker (that blocking *is* the backpressure: the worker reads no more input and commits
no offsets until the batch is stored). `stop()` makes a waiting `write` raise `SinkStopped`, so a worker that
shuts down never commits the offsets of a batch that was not stored. On a cluster with several nodes listed
(CITYOPS_CLICKHOUSE_NODES) a node that cannot be reached is left for the next one at once (`ClickHouseSink`).

The sink inserts over HTTP when an HTTP port is known, else over the native protocol (`transport=` forces one).
If the HTTP port refuses connections while the native port answers (a site that closed it), the sink logs a
warning once and stays on the native protocol: slower, never stuck.

`SinkBuffer` collects batches and the Kafka offsets they came from and says when a flush is due (by row count or
age); see `SinkBuffer.flush` for the order "store, then commit". The worker does not use it (its checkpoints,
pipeline.runtime.consumer, keep that order themselves).

Replays are harmless: every table de-duplicates by its stable key (ReplacingMergeTree, see
pipeline/sink/migrations/0001_core_tables.sql), and a batch is de-duplicated by key before it is sent, so a
batch retried after a half-finished attempt, or replayed from Kafka, adds no logical row.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import Settings
from pipeline.model.records import (
    SinkBatch,
)
from pipeline.sink.tables import (
    SinkRejected,
    TableSpec,
    batch_columns,
    dedup_columns,
    to_columns,
)
from pipeline.sink.transport import (
    ClickHouse,
    ClickHouseHttp,
    QueryError,
    http_port,
    is_retryable,
    is_unreachable,
)

log = logging.getLogger("cityops.sink")


class SinkStopped(Exception):
    """`stop()` was called while `write` was still trying: the batch may not be stored; don't commit it."""


# ---- the Native block format (the fast path's body) ----------------------------------------------------
# A block is: varint column count, varint row count, then per column its name, its type and its values in
# ClickHouse's binary column layout (little-endian fixed width; String = varint length + UTF-8 bytes;
# Nullable = one null byte per row, then the values with 0 / '' in the null slots; Array = cumulative UInt64
# end offsets, then the flattened items). Every step below is one C-level pass over a column.


# ---- the HTTP insert path ----------------------------------------------------------------------------------


# ---- rows to columns ------------------------------------------------------------------------------------


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
Writer = ClickHouse | ClickHouseHttp


class ClickHouseSink:
    """Stores SinkBatches; see the module docstring for the contract.

    `write` may be called from a worker thread (e.g. `loop.run_in_executor`); concurrent writes are
    serialized. Counters: `retries` (failed attempts that were retried), `switches` (moves to another node),
    `rows_written`, `batches_written`. `transport`: "http" (Native blocks over the HTTP interface, the fast path)
    or "native" (the driver's columnar insert); by default HTTP when `http_port(settings)` knows a port.

    Nodes: `settings.clickhouse_node_settings()` (CITYOPS_CLICKHOUSE_NODES, else the one host/port). The sink
    writes through the first; when the node it writes through is unreachable (`is_unreachable`: refused, reset,
    timed out; not an error the node answered with, such as a read-only table, which backs off as on one node)
    it moves to the next one at once, and backs off only once every node failed since the last stored block. It
    stays on the new node until that one fails. A block retried through another node is not doubled: each shard's
    Replicated table de-duplicates it by its checksum in ZooKeeper, whichever replica receives it (README
    "Running a city: the cluster").

    `client` replaces the writer (anything with `insert_columns` and `close`), e.g. a fake in tests, on one
    node; `connect(node_settings)` opens the writer of each node instead (a fake per node in tests).
    """

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 client: ClickHouse | None = None, transport: Transport | None = None,
                 connect: Callable[[Settings], Writer] | None = None) -> None:
        self._nodes = settings.clickhouse_node_settings()
        self._node = 0
        self._settings = self._nodes[0]
        self._client = client
        self._connect = connect
        self._choice = transport
        self._db: Writer = self._open(self._settings)
        self.transport: Transport = "http" if isinstance(self._db, ClickHouseHttp) else "native"
        self._may_fall_back = transport is None and self.transport == "http"
        self._refused_while_native_answers = 0
        self._tried: set[int] = set()       # nodes found unreachable since the last stored block or backoff
        self._backoff = backoff or Backoff()
        self._stopped = threading.Event()
        self._write_lock = threading.Lock()
        self.retries = 0
        self.switches = 0
        self.rows_written = 0
        self.batches_written = 0

    def _open(self, node: Settings) -> Writer:
        if self._client is not None:
            return self._client
        if self._connect is not None:
            return self._connect(node)
        if self._choice == "http" or (self._choice is None and http_port(node) is not None):
            return ClickHouseHttp(node)
        return ClickHouse(node)

    @property
    def node(self) -> str:
        """host:port (native) of the node the sink writes through now."""
        return f"{self._settings.clickhouse_host}:{self._settings.clickhouse_port}"

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
                self._tried.clear()
                return
            except Exception as err:
                if not is_retryable(err):
                    raise SinkRejected(f"{spec.table}: {n} rows refused: {err}") from err
                down = True
                if isinstance(err, ConnectionRefusedError):
                    fell_back = self._fall_back_to_native()
                    if fell_back:
                        continue
                    down = fell_back is None
                if down and is_unreachable(err) and self._switch_node(err):
                    continue
                self._tried.clear()
                delay = self._backoff.delay(attempt)
                attempt += 1
                self.retries += 1
                log.warning("sink: insert into %s failed (attempt %d, %s: %s); retrying in %.1fs",
                            spec.table, attempt, type(err).__name__, str(err).splitlines()[0][:200], delay)
                if self._stopped.wait(delay):
                    raise SinkStopped(f"sink stopped before {n} rows were stored in {spec.table}") from err

    def _switch_node(self, err: BaseException) -> bool:
        """The node did not answer: write through the next one of the list (logged once per switch). True: retry
        at once; False: every node was unreachable since the last stored block, back off first."""
        if len(self._nodes) < 2 or self._client is not None:
            return False
        self._tried.add(self._node)
        was = self.node
        self._node = (self._node + 1) % len(self._nodes)
        self._settings = self._nodes[self._node]
        self._db.close()
        self._db = self._open(self._settings)
        self.transport = "http" if isinstance(self._db, ClickHouseHttp) else "native"   # a node may lack HTTP
        self._may_fall_back = self._choice is None and self.transport == "http"
        self._refused_while_native_answers = 0
        self.switches += 1
        log.warning("sink: ClickHouse node %s unreachable (%s); writing through %s (%s)", was, type(err).__name__,
                    self.node, self.transport)
        return self._node not in self._tried

    def _fall_back_to_native(self) -> bool | None:
        """The HTTP port refused: if the native port answers, three times in a row (a restarting server may
        open its ports one after the other), use it from now on, on every node. True: retry at once; False: the
        native port answers (back off, the node is up); None: the node is down, or HTTP was chosen."""
        if not self._may_fall_back:
            return None
        native = ClickHouse(self._settings, connect_timeout=2.0)
        try:
            native.execute("SELECT 1")
        except QueryError:
            native.close()
            self._refused_while_native_answers = 0
            return None    # the whole server is down: keep HTTP and wait like any outage (or try another node)
        self._refused_while_native_answers += 1
        if self._refused_while_native_answers < 3:
            native.close()
            return False
        assert isinstance(self._db, ClickHouseHttp)
        log.warning("sink: ClickHouse HTTP port %s refuses connections but the native port answers; using "
                    "the native protocol (slower). Set CITYOPS_CLICKHOUSE_HTTP_PORT to the server's HTTP port, "
                    "or 0 to silence this.", self._db.where)
        self._db.close()
        self._db = native
        self._choice, self.transport, self._may_fall_back = "native", "native", False
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
