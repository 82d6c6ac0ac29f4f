"""The worker: the ingest stage (pipeline.ingest_service) and the cases stage (a Faust agent, below), each a
thin loop that feeds batches through pipeline.flow and sends or stores the results.

Read top to bottom, this is the whole wiring:

    cityops.raw.hotline  -+
    cityops.raw.patrol   -+-> ingest (decode, sensor state, locate) -> cityops.located (keyed by grid)
    cityops.raw.iot      -+        |-> cityops.deadletter, cityops.unlocated, ClickHouse sensor_readings
    cityops.case-updates -+
    cityops.located -> cases (correlate, dispatch, lifecycle) -> cityops.assignments, ClickHouse cases/events/
                                                                 case_transitions, cityops.deadletter (refusals)

Consumer groups: `<app id>-ingest` and `<app id>-cases` (Settings.consumer_groups), in every process layout.

Delivery: a batch's outputs are stored in ClickHouse and acknowledged by the broker before the batch's state is
written (sensor-state changelog, cases table) and its offsets can be committed. A crash replays from the last
commit; stable ids make the replay change nothing (see pipeline.cases and pipeline.ingest_service).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from pipeline.cases import Case, CaseBook, CorrelationPolicy, Outcome, case_partition_key
from pipeline.config import Settings
from pipeline.decode import CaseUpdate, default_decoder
from pipeline.flow import (
    CaseStage,
    DeadLetterLimit,
    Ingest,
    decode_located,
    encode_update,
)
from pipeline.ingest_service import EXIT_STAGE_FAILED, fatal
from pipeline.privacy import pii_key
from pipeline.records import SinkBatch
from pipeline.sensors import RegistryHolder
from pipeline.sink import SinkStopped

log = logging.getLogger("cityops.worker")

BATCH = int(os.environ.get("CITYOPS_BATCH", "2000"))
BATCH_WITHIN_S = float(os.environ.get("CITYOPS_BATCH_WITHIN", "0.05"))


@dataclass
class Counters:
    """Running totals (exposed to the health endpoint and logs)."""

    consumed: dict[str, int] = field(default_factory=dict)
    deadletters: int = 0
    unlocated: int = 0
    assignments: int = 0
    refusals: int = 0
    duplicates: int = 0
    unknown_sensors: set[str] = field(default_factory=set)
    last_batch_at: float = 0.0

    def add(self, topic: str, n: int) -> None:
        self.consumed[topic] = self.consumed.get(topic, 0) + n
        self.last_batch_at = time.time()


@dataclass
class Components:
    settings: Settings
    ingest: Ingest
    cases: CaseStage
    sink: Any                         # pipeline.sink.ClickHouseSink
    grid_holder: Any                  # grid.index.GridHolder
    rules_holder: Any                 # rules.engine.RulesHolder
    registry_holder: RegistryHolder
    dlq_limit: DeadLetterLimit
    counters: Counters = field(default_factory=Counters)


def load_components(settings: Settings) -> Components:
    """Load grid, gazetteer, rules, sensor registry and the sink; fail loudly when any is invalid."""
    pii_key()   # a missing or weak key in production stops the worker before it reads a single ticket
    from grid.gazetteer import Gazetteer
    from grid.index import GridHolder
    from pipeline.sink import ClickHouseSink
    from rules.engine import DEFAULT_RULES, RulesHolder

    grid_holder = GridHolder(Path(os.environ["CITYOPS_GRID"])) if os.environ.get("CITYOPS_GRID") else GridHolder()
    rules_holder = RulesHolder(Path(os.environ.get("CITYOPS_RULES", str(DEFAULT_RULES))))
    registry = RegistryHolder(Path(os.environ["CITYOPS_SENSORS"]) if os.environ.get("CITYOPS_SENSORS") else None)
    max_ratio = float(os.environ.get("CITYOPS_DLQ_MAX_RATIO", "0.5"))
    ingest = Ingest(decoder=default_decoder(), grid=grid_holder.current, gazetteer=Gazetteer.load(),
                    sensors=registry.current)
    return Components(settings=settings, ingest=ingest, cases=CaseStage(rules_holder, CorrelationPolicy()),
                      sink=ClickHouseSink(settings), grid_holder=grid_holder, rules_holder=rules_holder,
                      registry_holder=registry, dlq_limit=DeadLetterLimit(max_ratio=max_ratio))


STAGES = ("ingest", "cases")


def build_app(c: Components) -> faust.App:
    """The Faust app of the cases stage: the located topic in, cases out (the ingest stage is
    pipeline.ingest_service.IngestService, run beside it or alone, see `run_worker`).

    Its consumer group and table prefix is `<app id>-cases` whatever the process layout, so `--stage all`
    and separate `--stage ingest` / `--stage cases` processes can replace one another on the same pipeline.
    """
    s = c.settings
    t = s.topics
    app = faust.App(
        f"{s.app_id}-cases",
        broker=[f"kafka://{b}" for b in s.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(s),
        store="memory://",
        web_enabled=False,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=BATCH * 4,
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        producer_max_request_size=4 * 1024 * 1024,
        stream_buffer_maxsize=BATCH * 2,
        table_cleanup_interval=3600.0,
    )
    located = app.topic(t.located, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw",
                        partitions=s.partitions)
    out_assignments = app.topic(t.assignments, value_serializer="raw", key_serializer="raw")
    out_dead = app.topic(t.deadletter, value_serializer="raw", key_serializer="raw")
    out_state = app.topic(t.case_state, value_serializer="raw", key_serializer="raw")
    # Cases are stored one per key (a case id) but live on the partition of their grid, the partition of the
    # located topic their reports come from: the changelog partition is computed from the grid key.
    case_table: Any = app.Table("cases", default=None, partitions=s.partitions, key_type=bytes, value_type=bytes)
    case_table.partition_for_key = lambda key: grid_partition(case_partition_key(_text(key)), s.partitions)
    books = BookCache(case_table, c.cases.policy)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's signal stubs omit async receivers
    async def _forget_books(app: Any, revoked: Any, **kwargs: Any) -> None:
        books.clear()

    loop_sink = _SinkRunner(c.sink)

    async def cases(stream: Any) -> Any:
        async for events in stream.take_events(BATCH, within=BATCH_WITHIN_S):
            items = [(e.message.key.decode(), e.message.value) for e in events]
            try:
                refresh(c)
                batch_books = books.load({key for key, _ in items})
                out = c.cases.apply(items, batch_books)
                books.adopt(batch_books)
                await _store_and_send(out)
                books.persist(batch_books.values())
            except (asyncio.CancelledError, SinkStopped):
                raise
            except Exception as err:
                # Faust would restart the agent after the failed batch, whose events may count as processed:
                # stop the process instead; the batch was not committed and is replayed after the restart.
                log.exception("cases stage failed")
                fatal(EXIT_STAGE_FAILED, f"cases stage: {type(err).__name__}: {err}")
            c.counters.add(t.located, len(items))
            yield len(items)

    async def _store_and_send(out: Outcome) -> None:
        stored = loop_sink.write(SinkBatch(cases=list(out.cases.values()), events=out.events,
                                           transitions=out.transitions))
        sends = [out_assignments.send(key=a.team.encode(), value=orjson.dumps(a.to_json()))
                 for a in out.assignments]
        sends += [out_state.send(key=cid.encode(), value=orjson.dumps(state)) for cid, state in out.states.items()]
        now = time.time()
        sends += [out_dead.send(key=b"refused", value=orjson.dumps({
            "source_topic": t.case_updates, "partition": -1, "offset": -1, "reason": f"refused: {r}",
            "raw": r, "raw_encoding": "utf-8", "at": _iso_now(now)})) for r in out.refusals]
        # the rows and the messages go out side by side; both are done before the batch is acknowledged
        await asyncio.gather(stored, _deliver(sends))
        c.counters.assignments += len(out.assignments)
        c.counters.refusals += len(out.refusals)
        c.counters.duplicates += out.duplicates

    async def escalate_overdue() -> None:
        """Escalate overdue cases of quiet grids (busy ones are checked on every batch)."""
        refresh(c)
        out = Outcome()
        loaded = books.load(books.all_keys())
        clock = max((b.clock for b in loaded.values()), default=None)
        if clock is None:
            return
        if os.environ.get("CITYOPS_SLA_CLOCK", "stream") == "wall":
            clock = max(clock, datetime.now(UTC))
        books.adopt(loaded)
        for book in loaded.values():
            out.extend(book.escalate_overdue(clock))
        if out.assignments:
            await _store_and_send(out)
            books.persist(loaded.values())

    app.agent(located, name="cityops.cases")(cases)
    app.timer(interval=float(os.environ.get("CITYOPS_SLA_CHECK_INTERVAL", "10")))(escalate_overdue)
    app.cityops_components = c  # type: ignore[attr-defined]
    return app


PARKED = "#parked"   # table key suffix: updates that arrived before their case, kept with the grid's cases


def broker_credentials(s: Settings) -> Any:
    """Faust credentials for a secured cluster (SASL and/or TLS, as configured), None for PLAINTEXT."""
    protocol = s.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=s.kafka_ssl_cafile)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(username=s.kafka_username, password=s.kafka_password,
                                 mechanism=s.kafka_sasl_mechanism or "PLAIN", ssl_context=ssl_context)


class BookCache:
    """The case books of the grids this worker owns, in memory, backed by the cases table.

    A book is built from the table the first time its grid is seen (after a start or a rebalance, when the
    cache is cleared) and kept; after each batch only the cases that changed are written back.
    """

    def __init__(self, table: Any, policy: CorrelationPolicy) -> None:
        self.table = table
        self.policy = policy
        self.books: dict[str, CaseBook] = {}
        self._by_grid: dict[str, list[str]] | None = None

    def clear(self) -> None:
        self.books.clear()
        self._by_grid = None

    def all_keys(self) -> set[str]:
        return set(self._grid_index()) | set(self.books)

    def _grid_index(self) -> dict[str, list[str]]:
        if self._by_grid is None:
            index: dict[str, list[str]] = {}
            for key in list(self.table.keys()):
                case_id = _text(key)
                index.setdefault(case_partition_key(case_id), []).append(case_id)
            self._by_grid = index
        return self._by_grid

    def load(self, keys: set[str]) -> dict[str, CaseBook]:
        out: dict[str, CaseBook] = {}
        for key in keys:
            book = self.books.get(key)
            if book is None:
                ids = self._grid_index().get(key, ())
                stored = [self.table.get(cid.encode()) for cid in ids if not cid.endswith(PARKED)]
                cases = [Case.from_dict(orjson.loads(v)) for v in stored if v is not None]
                book = CaseBook.from_cases(key, cases, self.policy)
                for cid in ids:
                    value = self.table.get(cid.encode()) if cid.endswith(PARKED) else None
                    if value:
                        updates = [decode_located(orjson.dumps(u)) for u in orjson.loads(value)]
                        book.parked[cid[: -len(PARKED)]] = [u for u in updates if isinstance(u, CaseUpdate)]
            out[key] = book
        return out

    def adopt(self, books: dict[str, CaseBook]) -> None:
        self.books.update(books)

    def persist(self, books: Any) -> None:
        for book in books:
            for case in book.take_dirty():
                self.table[case.case_id.encode()] = orjson.dumps(case.to_dict())
            for cid, updates in book.take_parked_dirty().items():
                key = (cid + PARKED).encode()
                if updates:
                    self.table[key] = orjson.dumps([orjson.loads(encode_update(u)) for u in updates])
                else:
                    self.table.pop(key, None)
            for gone in book.prune():
                self.table.pop(gone.encode(), None)


def grid_partition(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives a grid key: where its located reports go."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


class _SinkRunner:
    """Runs the blocking ClickHouse sink off the event loop; awaiting it is the backpressure."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    async def write(self, batch: SinkBatch) -> None:
        if len(batch):
            await asyncio.get_running_loop().run_in_executor(None, self.sink.write, batch)


async def _deliver(sends: Sequence[Any]) -> None:
    """Send and wait until the broker acknowledged every message (raises when one failed)."""
    if not sends:
        return
    futures = await asyncio.gather(*sends)
    await asyncio.gather(*futures)


def refresh(c: Components) -> None:
    """Pick up a changed grid or ruleset (validated; a bad file is refused and the old one stays)."""
    now = time.monotonic()
    if now - getattr(c, "_last_refresh", 0.0) < 2.0:
        return
    c._last_refresh = now  # type: ignore[attr-defined]
    c.rules_holder.maybe_reload()
    if c.grid_holder.maybe_reload():
        c.ingest.grid = c.grid_holder.current
    if c.registry_holder.maybe_reload():
        c.ingest.sensors = c.registry_holder.current


def _iso_now(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def run_worker(settings: Settings, loglevel: str = "warn", stage: str = "all") -> None:
    """Run the ingest stage, the cases stage, or both in one process (`stage` "all")."""
    from pipeline.ingest_service import IngestService

    components = load_components(settings)
    if stage == "ingest":
        from mode import Worker as ServiceWorker

        ServiceWorker(IngestService(components), loglevel=loglevel).execute_from_commandline()
        return
    from faust.worker import Worker

    app = build_app(components)
    if stage == "all":
        app.add_dependency(IngestService(components))
    worker = Worker(app, loglevel=loglevel)
    # Faust's terminal spinner sets the root logger to DEBUG, so every library debug call builds a log record
    # (about 6% of the worker's CPU): no spinner, the level stays what --loglevel says.
    worker.spinner = None
    worker.execute_from_commandline()


def _cmd(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper() if args.loglevel != "warn" else "WARNING")
    run_worker(Settings.from_env(), args.loglevel, args.stage)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run a stream worker (joins the consumer group)")
    p.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    p.add_argument("--stage", default="all", choices=["all", *STAGES],
                   help="run both stages (default) or one: ingest (decode, sensors, locate) or cases "
                        "(correlate, dispatch, lifecycle); see README 'Running the workers'")
    p.set_defaults(func=_cmd)
