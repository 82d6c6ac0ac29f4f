"""The fast insert path: Native blocks encoded here, sent over HTTP; stored rows identical to the driver's."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.model.records import PatrolReportRow, SinkBatch
from pipeline.sink.native import encode_block, encode_column, encode_strings
from pipeline.sink.tables import batch_blocks, to_columns
from pipeline.sink.transport import _server_error, http_port, is_retryable
from tests.analytics.history import generate

TABLES = ("events", "case_transitions", "sensor_readings", "patrol_reports", "case_rounds", "cases")


def reference_strings(values: list[str]) -> bytes:
    """The String layout written the slow, obvious way: LEB128 length, then the UTF-8 bytes."""
    out = bytearray()
    for v in values:
        raw = v.encode("utf-8")
        n = len(raw)
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                break
        out += raw
    return bytes(out)


@given(st.lists(st.one_of(st.text(max_size=40), st.sampled_from(["", "E0501", "中文", "a\tb\n"]),
                          st.text(min_size=120, max_size=300)), max_size=60),
       st.integers(min_value=0, max_value=3))
def test_strings_match_the_reference_layout(values: list[str], repeat: int) -> None:
    """Any text (long, unicode, repeated or not) is length-prefixed exactly as ClickHouse reads it."""
    column = values * (repeat + 1)
    assert encode_strings(column) == reference_strings(column)


def test_lengths_needing_two_and_three_varint_bytes() -> None:
    """Values of 127, 128, 16383 and 16384 bytes get 1, 2, 2 and 3 length bytes, whatever the column's
    longest value is."""
    column = ["x" * 127, "é" * 64, "y" * 16383, "z" * 16384, ""]
    assert encode_strings(column) == reference_strings(column)
    for longest in (127, 128, 200, 255, 256):
        column = ["a", "x" * longest, "", "中"]
        assert encode_strings(column) == reference_strings(column), longest


def test_empty_texts_and_texts_holding_nul() -> None:
    """Columns of empty strings only, and values that contain NUL characters, keep their exact bytes."""
    for column in ([""], ["", "", ""], ["\x00"], ["a\x00b", "", "\x00\x00"], ["x" * 300 + "\x00", "y"]):
        assert encode_strings(column) == reference_strings(column), column


def test_fixed_width_nullable_and_array_columns() -> None:
    """Numbers are little-endian at the type's width; Nullable puts a null map first; Array puts end offsets
    first (checked against struct packing)."""
    assert encode_column("UInt32", [0, 1, 2**32 - 1]) == struct.pack("<3I", 0, 1, 2**32 - 1)
    assert encode_column("Int16", [-3, 2]) == struct.pack("<2h", -3, 2)
    assert encode_column("UInt8", [True, False]) == b"\x01\x00"
    assert encode_column("Float64", [1.5, -0.0]) == struct.pack("<2d", 1.5, -0.0)
    assert encode_column("DateTime('UTC')", [1714521600]) == struct.pack("<I", 1714521600)
    assert encode_column("Nullable(Float64)", [1.25, None, float("inf")]) == (
        b"\x00\x01\x00" + struct.pack("<3d", 1.25, 0.0, float("inf")))
    nan = encode_column("Nullable(Float64)", [float("nan"), None])
    assert nan[:2] == b"\x00\x01" and struct.unpack("<2d", nan[2:])[0] != struct.unpack("<2d", nan[2:])[0]
    assert encode_column("Nullable(DateTime)", [None, 7]) == b"\x01\x00" + struct.pack("<2I", 0, 7)
    assert encode_column("Nullable(String)", ["a", None]) == b"\x00\x01" + reference_strings(["a", ""])
    assert encode_column("Array(String)", [("a", "b"), (), ("c",)]) == (
        struct.pack("<3Q", 2, 2, 3) + reference_strings(["a", "b", "c"]))


def test_low_cardinality_layout() -> None:
    """LowCardinality: version 1 once (before an Array's offsets), then index type with the additional-keys
    flag, the keys, the row count and each row's key; key 0 means NULL for LowCardinality(Nullable(...));
    more than 256 keys take 2-byte indexes."""
    version, flag = struct.pack("<Q", 1), 1 << 9
    assert encode_column("LowCardinality(String)", ["b", "a", "b"]) == (
        version + struct.pack("<QQ", flag, 2) + reference_strings(["b", "a"]) + struct.pack("<Q", 3) + b"\x00\x01\x00")
    assert encode_column("LowCardinality(Nullable(String))", [None, "a", None, ""]) == (
        version + struct.pack("<QQ", flag, 3) + reference_strings(["", "a", ""]) + struct.pack("<Q", 4)
        + b"\x00\x01\x00\x02")
    assert encode_column("Array(LowCardinality(String))", [["a"], [], ["a", "c"]]) == (
        version + struct.pack("<3Q", 1, 1, 3) + struct.pack("<QQ", flag, 2) + reference_strings(["a", "c"])
        + struct.pack("<Q", 3) + b"\x00\x00\x01")
    assert encode_column("Array(LowCardinality(String))", [[], []]) == version + struct.pack("<2Q", 0, 0)
    many = [str(i) for i in range(300)]
    assert encode_column("LowCardinality(String)", many) == (
        version + struct.pack("<QQ", flag | 1, 300) + reference_strings(many) + struct.pack("<Q", 300)
        + struct.pack("<300H", *range(300)))


def test_values_that_do_not_fit_are_refused_not_retried() -> None:
    """A negative or too large number raises (a data error, which the sink refuses instead of retrying)."""
    for typ, bad in (("UInt32", -1), ("UInt8", 256), ("DateTime", 2**32), ("Int16", 40_000)):
        with pytest.raises(OverflowError) as info:
            encode_column(typ, [1, bad])
        assert not is_retryable(info.value)
    with pytest.raises(ValueError, match="Decimal"):
        encode_column("Decimal(9, 2)", [1])
    with pytest.raises(ValueError, match="rows"):
        encode_block(("a", "b"), ("UInt8", "UInt8"), [[1], [1, 2]])


def test_http_port_comes_from_the_environment_or_pairs_with_the_native_port() -> None:
    """CITYOPS_CLICKHOUSE_HTTP_PORT wins (0 = off); else 19000 -> 18123, 9000 -> 8123, 9440 -> 8443, else none."""
    s = Settings()
    assert http_port(s) == 18123
    assert http_port(replace(s, clickhouse_port=9000)) == 8123
    assert http_port(replace(s, clickhouse_port=9440)) == 8443
    assert http_port(replace(s, clickhouse_port=9999)) is None
    assert http_port(Settings.from_env({"CITYOPS_CLICKHOUSE_HTTP_PORT": "8124"})) == 8124
    assert http_port(Settings.from_env({"CITYOPS_CLICKHOUSE_HTTP_PORT": "0"})) is None
    assert http_port(Settings.from_env({"CITYOPS_CLICKHOUSE_PORT": "9000"})) == 8123


def test_server_errors_keep_their_codes_for_the_retry_decision() -> None:
    """A 'too many parts' answer is retried, a type error is not; a proxy's 503 without a code is retried."""
    assert is_retryable(_server_error(500, b"Code: 252, e.displayText() = DB::Exception: Too many parts", "h"))
    assert not is_retryable(_server_error(500, b"Code: 53, e.displayText() = DB::Exception: Type mismatch", "h"))
    # a shard's replica killed under a synchronous Distributed insert (seen in the cluster failover test)
    assert is_retryable(_server_error(500, b"Code: 32, e.displayText() = DB::Exception: Attempt to read after eof: "
                                           b"while receiving packet from 127.0.0.1:23300: Insertion status: ...", "h"))
    # the server reading a cut body of ours: the same block would fail again
    assert not is_retryable(_server_error(500, b"Code: 32, e.displayText() = DB::Exception: Attempt to read after "
                                               b"eof: while reading Native block", "h"))
    assert is_retryable(_server_error(503, b"<html>Service Unavailable</html>", "h"))
    assert not is_retryable(_server_error(403, b"Forbidden", "h"))


def test_a_cluster_missing_a_replica_or_its_zookeeper_is_waited_for() -> None:
    """What 18.16 answers while a replica of the shard is down under insert_quorum (285) or ZooKeeper is (999,
    225): the failover tests (tests/cluster/test_failover.py) saw the first stop the worker before it was retried."""
    down = b"Code: 285, e.displayText() = DB::Exception: Number of alive replicas (1) is less than requested quorum (2)"
    assert is_retryable(_server_error(500, down, "h"))
    assert is_retryable(_server_error(500, b"Code: 999, e.displayText() = Coordination: Connection loss", "h"))
    assert is_retryable(_server_error(500, b"Code: 225, e.displayText() = DB: ZooKeeper session expired", "h"))


def edge_batch() -> SinkBatch:
    """A generated history plus the awkward values: NULLs, NaN, aware and naive times, unicode, escapes,
    long text, empty and three-element arrays."""
    batches = generate(seed=9, n_cases=120, start=datetime(2024, 3, 1), days=20).batches
    b = SinkBatch()
    for part in batches:
        b.cases += part.cases
        b.events += part.events
        b.transitions += part.transitions
        b.rounds += part.rounds
    # one copy of each key (the history replays a batch), so that the edits below are the stored rows
    b.events = list({e.event_id: e for e in b.events}.values())
    b.cases = list({c.case_id: c for c in sorted(b.cases, key=lambda c: c.revision)}.values())
    b.rounds = list({(r.case_id, r.round): r for r in sorted(b.rounds, key=lambda r: r.revision)}.values())
    ev = b.events
    ev[0] = replace(ev[0], description="tab\tnl\nbs\\ quote' \" 中文 émoji 🚧 " + "长" * 300, lon=None, lat=None)
    ev[1] = replace(ev[1], value=float("nan"), received_at=datetime(2024, 3, 2, 8, tzinfo=timezone(timedelta(hours=8))))
    ev[2] = replace(ev[2], value=-1e-300, sensor_type="manhole_tilt", request_type="")
    cs = b.cases
    cs[0] = replace(cs[0], sources=("hotline", "patrol", "iot"), closed_at=None, due_at=None)
    cs[1] = replace(cs[1], sources=(), created_at=datetime(2024, 3, 3, 23, 59, 59, 999999))
    cs[2] = replace(cs[2], kind="device_fault", sensor_id="传感器-7", recurrence_of="case-x",
                    previous_closed_at=datetime(2024, 3, 1, 8, tzinfo=timezone(timedelta(hours=8))), rejected=65535,
                    escalations=3)
    rs = b.rounds
    rs[0] = replace(rs[0], round=65535, priority=-1, verified_by="patrol",
                    accepted_at=datetime(2024, 3, 2, 8, tzinfo=timezone(timedelta(hours=8))))
    from pipeline.bench.sink import make_readings

    b.readings = make_readings(500)
    b.patrol_reports = [
        PatrolReportRow("patrol:R1", "insp-7", "patrol-310109009-1", datetime(2024, 3, 2, 1), "filed", "", "c1",
                        "310109009"),
        PatrolReportRow("dead:cityops.raw.patrol:0:7", "监督员 007", "巡查", datetime(2024, 3, 2, 8,
                        tzinfo=timezone(timedelta(hours=8))), "dead_letter", "category: 'E9999' \t 中文"),
    ]
    return b


def stored(db: Any, table: str) -> str:
    """Every row of `table` (latest versions), in key order, as text (NaN compares equal as text)."""
    return repr(db.execute(f"SELECT * FROM {table} FINAL ORDER BY tuple(*)"))


@pytest.mark.clickhouse
def test_http_and_native_paths_store_identical_rows(settings: Settings, tmp_path: Path) -> None:
    """The same batches written over HTTP and with the driver leave the same rows in all six tables of the
    18.16 server."""
    import uuid

    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    batch = edge_batch()
    results: dict[str, dict[str, str]] = {}
    for transport in ("native", "http"):
        s = replace(settings, clickhouse_database=f"cityops_t{uuid.uuid4().hex[:10]}")
        migrate(s)
        sink = ClickHouseSink(s, transport=transport)   # type: ignore[arg-type]
        try:
            sink.write(batch)
            assert sink.transport == transport
        finally:
            sink.close()
        db = ClickHouse(s)
        try:
            results[transport] = {t: stored(db, t) for t in TABLES}
            db.execute(f"DROP DATABASE {s.clickhouse_database}")
        finally:
            db.close()
    for table in TABLES:
        assert results["http"][table] == results["native"][table], table
    assert "🚧" in results["http"]["events"] and "nan" in results["http"]["events"]


@pytest.mark.clickhouse
def test_a_closed_http_port_falls_back_to_the_native_protocol(isolated_settings: Settings) -> None:
    """With an HTTP port nobody listens on, the sink switches to the native port and stores everything."""
    import socket

    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import Backoff, ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    with socket.socket() as probe:          # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    isolated_settings = replace(isolated_settings, clickhouse_http_port=free)
    migrate(isolated_settings)
    sink = ClickHouseSink(isolated_settings, backoff=Backoff(initial_s=0.01, cap_s=0.02))
    assert sink.transport == "http"
    batch = edge_batch()
    sink.write(batch)
    sink.close()
    assert sink.transport == "native" and sink.retries >= 2
    db = ClickHouse(isolated_settings)
    try:
        assert db.execute("SELECT uniqExact(event_id) FROM events")[0][0] == len({e.event_id for e in batch.events})
    finally:
        db.close()


@pytest.mark.clickhouse
def test_http_credentials_are_sent(isolated_settings: Settings) -> None:
    """A wrong password over HTTP is refused by the server (not retried forever); the right one stores."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.sink.tables import SinkRejected

    migrate(isolated_settings)
    wrong = ClickHouseSink(replace(isolated_settings, clickhouse_password="not-the-password"), transport="http")
    with pytest.raises(SinkRejected, match="events"):
        wrong.write(edge_batch())
    wrong.close()


def test_chdb_reads_the_encoded_blocks_as_the_rows_it_stores_itself(tmp_path: Path) -> None:
    """Current ClickHouse (chdb) decodes our Native blocks into exactly the rows it stores from the same batch
    inserted as SQL text."""
    from tests.analytics.conftest import chdb_session
    from tests.analytics.engines import ChdbDatabase

    session = chdb_session()
    db = ChdbDatabase(session, "cityops_native_" + str(abs(hash(tmp_path)) % 10**8))
    db.migrate()
    try:
        batch = edge_batch()
        db.store(batch)
        for spec, rows in batch_blocks(batch):
            columns = to_columns(spec, rows)
            types = {r["name"]: r["type"] for r in db.query_dicts(
                f"SELECT name, type FROM system.columns WHERE database = '{db.database}' AND table = '{spec.table}'")}
            block = tmp_path / f"{spec.table}.native"
            block.write_bytes(encode_block(spec.columns, [types[c] for c in spec.columns], columns))
            cols = ", ".join(spec.columns)
            from_block = session.query(
                f"SELECT {cols} FROM file('{block}', 'Native') ORDER BY tuple(*)", "TSV").bytes()
            from_table = session.query(
                f"SELECT {cols} FROM {db.database}.{spec.table} FINAL ORDER BY tuple(*)", "TSV").bytes()
            assert from_block == from_table, spec.table
            assert from_block.count(b"\n") == len(rows)
    finally:
        db.execute(f"DROP DATABASE IF EXISTS {db.database}")
