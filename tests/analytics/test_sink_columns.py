"""The columnar batch form (EventColumns, ReadingColumns): it holds what the rows hold, the sink stores it
exactly as it stores rows, on both transports, and de-duplicates it the same way."""

from __future__ import annotations

import inspect
import math
import uuid
from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.model.records import EventColumns, EventRow, ReadingColumns, SensorReadingRow, SinkBatch, epoch_seconds
from pipeline.sink.sink import ClickHouseSink, SinkBuffer
from pipeline.sink.tables import _EVENTS, _READINGS, SinkRejected, batch_columns, dedup, dedup_columns, to_columns
from tests.analytics.test_sink import FAST, FakeClickHouse
from tests.analytics.test_sink_http import TABLES, edge_batch, stored


def as_columns(batch: SinkBatch) -> SinkBatch:
    """The same batch with its events and readings moved into column builders (as a stage would fill them)."""
    out = SinkBatch(cases=list(batch.cases), transitions=list(batch.transitions), rounds=list(batch.rounds),
                    patrol_reports=list(batch.patrol_reports))
    for e in batch.events:
        out.event_columns.add(e)
    for r in batch.readings:
        out.reading_columns.add(r)
    return out


def same(a: Any, b: Any) -> bool:
    """Equality that takes NaN as equal to NaN (a NaN reading must survive as NaN)."""
    return repr(a) == repr(b)


# ---- the builders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("builder", "row_type"), [(EventColumns, EventRow), (ReadingColumns, SensorReadingRow)])
def test_append_takes_the_row_fields_in_their_order_with_their_defaults(builder: Any, row_type: Any) -> None:
    """`append(...)` has the row type's fields as parameters, same order and defaults, so code that made a row
    can fill the builder with the same arguments; COLUMNS names the same fields."""
    params = list(inspect.signature(builder.append).parameters.values())[1:]
    row_fields = fields(row_type)
    assert [p.name for p in params] == [f.name for f in row_fields] == list(builder.COLUMNS)
    for p, f in zip(params, row_fields, strict=True):
        assert (p.default is inspect.Parameter.empty) == (f.default is MISSING), f.name
        if f.default is not MISSING:
            assert p.default == f.default, f.name


def test_builders_cover_the_table_columns_and_key() -> None:
    """Every column of `events` / `sensor_readings` is a builder list, and the builders' key is the table's."""
    for builder, spec in ((EventColumns, _EVENTS), (ReadingColumns, _READINGS)):
        assert set(builder.COLUMNS) == set(spec.columns)
        assert spec.key_columns == builder.KEY


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
       st.integers(min_value=-12 * 60, max_value=14 * 60))
def test_epoch_seconds_is_the_instant_in_utc(at: datetime, offset_min: int) -> None:
    """Naive times are UTC; aware times count from the same instant whatever their offset."""
    assert epoch_seconds(at) == math.floor(at.replace(tzinfo=UTC).timestamp())
    aware = at.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert epoch_seconds(aware) == math.floor(aware.timestamp())
    assert epoch_seconds(aware.astimezone(UTC)) == epoch_seconds(aware)


def test_builder_holds_each_row_in_its_lists() -> None:
    """`add` appends a row's values to the lists (times as epoch seconds); `extend` and `len` follow."""
    b = edge_batch()
    cols = EventColumns()
    for e in b.events[:3]:
        cols.add(e)
    assert len(cols) == 3
    assert cols.event_id == [e.event_id for e in b.events[:3]]
    assert cols.received_at == [epoch_seconds(e.received_at) for e in b.events[:3]]
    assert cols.lon[0] is None and cols.description[0] == b.events[0].description
    more = EventColumns()
    more.add(b.events[3])
    cols.extend(more)
    assert len(cols) == 4 and cols.event_id[-1] == b.events[3].event_id
    with pytest.raises(TypeError):
        cols.extend(ReadingColumns())


# ---- rows and columns give the same blocks --------------------------------------------------------------

def test_columns_give_the_blocks_rows_give() -> None:
    """A batch as rows and the same batch as column builders convert to identical blocks for every table
    (NULLs, NaN, aware and naive times, unicode, long text)."""
    b = edge_batch()
    b.events += b.events[:5]        # a replay inside the batch: de-duplicated alike
    b.readings += b.readings[:7]
    from_rows = batch_columns(b)
    from_cols = batch_columns(as_columns(b))
    assert [s.table for s, _ in from_rows] == [s.table for s, _ in from_cols] == list(TABLES)
    for (spec, rows_data), (_, cols_data) in zip(from_rows, from_cols, strict=True):
        assert same(rows_data, cols_data), spec.table
    events = dict(zip(_EVENTS.columns, from_rows[0][1], strict=True))
    assert len(events["event_id"]) == len({e.event_id for e in b.events})


times = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2105, 1, 1)),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2105, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])),
)
maybe_float = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
event_rows = st.builds(
    EventRow, event_id=st.text(max_size=12), source=st.sampled_from(["hotline", "patrol", "iot"]),
    case_id=st.text(max_size=5), category=st.just("E0501"), cell=st.text(max_size=3), subdistrict=st.just(""),
    received_at=times, ingested_at=times, lon=maybe_float, lat=maybe_float, snapped=st.booleans(),
    merged=st.booleans(), grid_version=st.just("g"), grid_kind=st.text(max_size=3),
    request_type=st.text(max_size=3), sensor_type=st.text(max_size=3), value=maybe_float,
    description=st.text(max_size=50))


@given(st.lists(event_rows, max_size=20))
def test_any_events_give_the_same_block_as_rows_or_as_columns(rows: list[EventRow]) -> None:
    """Whatever the events (repeated ids, NULL or NaN numbers, naive or aware times, any text), the builder
    form converts to exactly the block the row form converts to."""
    from_rows = batch_columns(SinkBatch(events=rows))[0][1]
    from_cols = batch_columns(as_columns(SinkBatch(events=rows)))[0][1]
    assert same(from_rows, from_cols)
    assert len(from_rows[0]) == len({r.event_id for r in rows})


keyed_rows = st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 3), st.integers()), max_size=40)


@given(keyed_rows)
def test_column_dedup_keeps_what_row_dedup_keeps(items: list[tuple[str, int, int]]) -> None:
    """For any keys with repeats, de-duplicating columns keeps the rows (and order) that row dedup keeps:
    the last copy of each key, in the order the keys first appear."""
    t0 = datetime(2024, 5, 1)
    rows = [SensorReadingRow(sid, "smoke", t0 + timedelta(minutes=m), n, 0.5, 1.5, "c") for sid, m, n in items]
    expected = to_columns(_READINGS, dedup(rows, _READINGS.key))
    assert dedup_columns(_READINGS, to_columns(_READINGS, rows)) == expected


def test_rows_and_columns_of_one_batch_are_deduplicated_across_both() -> None:
    """An event present as a row and again in the builder is stored once: the builder's copy (it comes
    after the rows)."""
    b = edge_batch()
    first = b.events[0]
    cols = EventColumns()
    cols.add(replace(first, description="from the builder"))
    for e in b.events[1:4]:
        cols.add(e)
    batch = SinkBatch(events=b.events[:10], event_columns=cols)
    data = dict(zip(_EVENTS.columns, batch_columns(batch)[0][1], strict=True))
    assert len(data["event_id"]) == 10
    assert data["description"][data["event_id"].index(first.event_id)] == "from the builder"


# ---- the sink with builders -------------------------------------------------------------------------------

def test_sink_writes_builders_and_buffer_merges_them() -> None:
    """SinkBuffer adds builders' rows to its count and flush writes them, one block per table."""
    fake = FakeClickHouse()
    sink = ClickHouseSink(Settings(), backoff=FAST, client=fake)  # type: ignore[arg-type]
    b = as_columns(edge_batch())
    half = len(b.event_columns) // 2
    first, second = EventColumns(), EventColumns()
    for name, values in b.event_columns.lists().items():
        getattr(first, name).extend(values[:half])
        getattr(second, name).extend(values[half:])
    buf = SinkBuffer(max_rows=10**6)
    buf.add(SinkBatch(event_columns=first), {("raw", 0): 3})
    buf.add(SinkBatch(event_columns=second, reading_columns=b.reading_columns), {("raw", 0): 4})
    assert len(buf) == len(b.event_columns) + len(b.reading_columns)
    committed: list[dict[tuple[str, int], int]] = []
    assert buf.flush(sink, committed.append) == len(b.event_columns) + len(b.reading_columns)
    written = {table: data for table, _, data in fake.blocks}
    assert set(written) == {"events", "sensor_readings"} and committed == [{("raw", 0): 4}]
    assert written["events"][_EVENTS.columns.index("event_id")] == b.event_columns.event_id
    assert len(written["sensor_readings"][0]) == len(b.reading_columns)


def test_a_builder_with_uneven_columns_is_rejected() -> None:
    """Rows appended to some lists only cannot be stored: the write is refused (not retried), nothing sent."""
    fake = FakeClickHouse()
    sink = ClickHouseSink(Settings(), backoff=FAST, client=fake)  # type: ignore[arg-type]
    b = as_columns(edge_batch())
    b.event_columns.description.append("a row without its other columns")
    with pytest.raises(SinkRejected, match="events"):
        sink.write(b)
    assert fake.blocks == []


def test_the_native_transport_leaves_the_builders_lists_as_they_were() -> None:
    """The driver overwrites NULLs in the lists it writes; the sink hands it copies, so a retried block (and
    the stage's builder) still holds its NULLs."""
    from pipeline.sink.transport import ClickHouse

    seen: list[list[list[Any]]] = []

    class Recording:
        def execute(self, sql: str, data: list[list[Any]], **_: Any) -> int:
            seen.append(data)
            for values in data:         # what clickhouse-driver does to Nullable columns
                values[:] = [0 if v is None else v for v in values]
            return len(data[0])

    db = ClickHouse(Settings())
    db._client = Recording()
    b = as_columns(edge_batch())
    lons = list(b.event_columns.lon)
    assert None in lons
    lists = b.event_columns.lists()
    db.insert_columns("events", _EVENTS.columns, [lists[c] for c in _EVENTS.columns])
    assert b.event_columns.lon == lons and seen and None not in seen[0][_EVENTS.columns.index("lon")]


# ---- stored rows: every path against the old one, on the 18.16 server --------------------------------------

@pytest.mark.clickhouse
def test_rows_and_columns_on_both_transports_store_what_the_old_path_stores(settings: Settings) -> None:
    """The same awkward batch stored four ways (rows or builders; HTTP or native) leaves exactly the rows the
    old path (rows through the driver) leaves, in all six tables."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.transport import ClickHouse

    batch = edge_batch()
    results: dict[tuple[str, str], dict[str, str]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for form in ("rows", "columns"):
        for transport in ("native", "http"):
            s = replace(settings, clickhouse_database=f"cityops_t{uuid.uuid4().hex[:10]}")
            migrate(s)
            sink = ClickHouseSink(s, transport=transport)
            try:
                sink.write(batch if form == "rows" else as_columns(batch))
                sink.write(as_columns(batch))       # a replay in the other form adds nothing
            finally:
                sink.close()
            db = ClickHouse(s)
            try:
                results[form, transport] = {t: stored(db, t) for t in TABLES}
                counts[form, transport] = [db.execute(f"SELECT count() FROM {t} FINAL")[0][0] for t in TABLES]
                db.execute(f"DROP DATABASE {s.clickhouse_database}")
            finally:
                db.close()
    old = results["rows", "native"]
    for key, got in results.items():
        for table in TABLES:
            assert got[table] == old[table], (key, table)
    assert "🚧" in old["events"] and "nan" in old["events"] and "None" in old["events"]
    keys: list[set[Any]] = [{e.event_id for e in batch.events}, {(t.case_id, t.seq) for t in batch.transitions},
            {(r.sensor_id, r.minute) for r in batch.readings},
            {(p.inspector, p.report_id, p.outcome) for p in batch.patrol_reports},
            {(r.case_id, r.round) for r in batch.rounds},
            {c.case_id for c in batch.cases}]
    assert set(map(tuple, counts.values())) == {tuple(len(k) for k in keys)}


# ---- every column shape, LowCardinality included, read back as written ------------------------------------

SHAPES = (
    ("id", "UInt32"), ("s", "String"), ("lc", "LowCardinality(String)"),
    ("lcn", "LowCardinality(Nullable(String))"), ("ns", "Nullable(String)"), ("f", "Float64"),
    ("nf", "Nullable(Float64)"), ("dt", "DateTime"), ("ndt", "Nullable(DateTime)"), ("arr", "Array(String)"),
    ("alc", "Array(LowCardinality(String))"), ("u8", "UInt8"), ("i16", "Int16"), ("u64", "UInt64"),
)
TEXTS = ("", "a", "E0501", "中文", "émoji 🚧", "tab\tnl\nbs\\ quote' \"", "x" * 127, "y" * 128, "长" * 6000,
         "nul\x00inside")


def shape_columns(n: int = 300) -> list[list[Any]]:
    """`n` rows over SHAPES with every awkward value: empty and long text (1-, 2- and 3-byte lengths), NUL
    inside text, NULLs, NaN and infinities, empty arrays, DateTime 0 and its last second, extreme ints."""
    import random

    rnd = random.Random(11)
    rows = []
    for i in range(n):
        rows.append((
            i, rnd.choice(TEXTS), rnd.choice(TEXTS[:6]), rnd.choice((None, *TEXTS[:4])),
            rnd.choice((None, *TEXTS)), rnd.choice((0.0, -1e-300, 1.5, float("inf"), float("nan"))),
            rnd.choice((None, 2.25, float("nan"), -0.5)), rnd.choice((0, 1714521600, 2**32 - 1)),
            rnd.choice((None, 1714521600)), [rnd.choice(TEXTS) for _ in range(rnd.randrange(3))],
            [rnd.choice(TEXTS[:5]) for _ in range(rnd.randrange(4))], rnd.choice((True, False, 0, 255)),
            rnd.choice((-32768, 0, 32767)), rnd.choice((0, 2**64 - 1)),
        ))
    return [list(c) for c in zip(*rows, strict=True)]


def shape_rows_as_stored(columns: list[list[Any]]) -> list[tuple[Any, ...]]:
    """What reading the columns back should give (bools as 0/1), as rows in id order."""
    return [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in zip(*columns, strict=True)]


def _select_shapes(table: str) -> str:
    names = [("toUInt32(dt)" if n == "dt" else "toUInt32(ndt)" if n == "ndt" else n) for n, _ in SHAPES]
    return f"SELECT {', '.join(names)} FROM {table} ORDER BY id"


@pytest.mark.clickhouse
def test_every_shape_reads_back_as_written_over_http_and_native(isolated_settings: Settings) -> None:
    """A block with Nullable, LowCardinality (plain, Nullable, in Array), DateTime, arrays, unicode, empty
    and long strings is stored by the 18.16 server exactly as given, over HTTP (our encoder) and over the
    native protocol (the driver)."""
    from clickhouse_driver import Client

    from pipeline.sink.transport import ClickHouse, ClickHouseHttp

    s = isolated_settings
    admin = Client(host=s.clickhouse_host, port=s.clickhouse_port, user=s.clickhouse_user,
                   password=s.clickhouse_password)
    admin.execute(f"CREATE DATABASE {s.clickhouse_database}")
    structure = ", ".join(f"{n} {t}" for n, t in SHAPES)
    for table in ("via_http", "via_native"):
        admin.execute(f"CREATE TABLE {s.clickhouse_database}.{table} ({structure}) ENGINE = MergeTree ORDER BY id",
                      settings={"allow_experimental_low_cardinality_type": 1})
    columns = shape_columns()
    names = [n for n, _ in SHAPES]
    http = ClickHouseHttp(s)
    native = ClickHouse(s)
    try:
        assert http.insert_columns("via_http", names, columns) == len(columns[0])
        native.insert_columns("via_native", names, columns)
        expected = shape_rows_as_stored(columns)
        for table in ("via_http", "via_native"):
            got = [tuple(r) for r in native.execute(_select_shapes(table))]
            assert same(got, expected), table
        types = dict(native.execute(f"SELECT name, type FROM system.columns WHERE database = "
                                    f"'{s.clickhouse_database}' AND table = 'via_http'"))
        assert types["lcn"] == "LowCardinality(Nullable(String))"
    finally:
        http.close()
        native.close()


def test_current_clickhouse_reads_every_shape_as_written(tmp_path: Path) -> None:
    """Current ClickHouse (chdb) decodes our block of every shape into exactly the rows it stores from the same
    values given as SQL text."""
    from pipeline.sink.native import encode_block
    from pipeline.sink.transport import render_query
    from tests.analytics.conftest import chdb_session

    session = chdb_session()
    db = "cityops_shapes_" + uuid.uuid4().hex[:8]
    columns = shape_columns()
    block = tmp_path / "shapes.native"
    block.write_bytes(encode_block([n for n, _ in SHAPES], [t for _, t in SHAPES], columns))
    session.query(f"CREATE DATABASE {db}")
    try:
        structure = ", ".join(f"{n} {t}" for n, t in SHAPES)
        session.query(f"CREATE TABLE {db}.t ({structure}) ENGINE = MergeTree ORDER BY id")
        rows = [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in zip(*columns, strict=True)]
        values = ", ".join(render_query("%(r)s", {"r": r}) for r in rows)
        session.query(f"INSERT INTO {db}.t VALUES {values}")
        from_block = session.query(f"SELECT * FROM file('{block}', 'Native') ORDER BY id", "TSV").bytes()
        from_table = session.query(f"SELECT * FROM {db}.t ORDER BY id", "TSV").bytes()
        assert from_block == from_table
        assert from_block.count(b"\n") == len(rows)
        described = session.query(f"DESCRIBE file('{block}', 'Native')", "TSV").bytes().decode()
        assert "LowCardinality(Nullable(String))" in described
    finally:
        session.query(f"DROP DATABASE IF EXISTS {db}")
