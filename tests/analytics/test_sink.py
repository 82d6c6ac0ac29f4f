"""The sink: de-duplicated columnar blocks, store-then-commit, retry with backoff, stop without commit."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from clickhouse_driver import errors as ch_errors
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.model.records import (
    CaseRow,
    EventRow,
    PatrolReportRow,
    RoundRow,
    SensorReadingRow,
    SinkBatch,
    TransitionRow,
)
from pipeline.sink.sink import Backoff, ClickHouseSink, SinkBuffer, SinkStopped
from pipeline.sink.tables import SinkRejected, batch_blocks, to_columns
from tests.analytics.history import generate

T0 = datetime(2024, 5, 1, 8, 0)


def small_batch() -> SinkBatch:
    return generate(seed=3, n_cases=30, start=T0, days=3).batches[0]


class FakeClickHouse:
    """Records inserted blocks; fails the first `failures` inserts with `error`."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ch_errors.NetworkError("connection refused")
        self.blocks: list[tuple[str, tuple[str, ...], list[list[Any]]]] = []
        self.closed = False

    def insert_columns(self, table: str, columns: tuple[str, ...], data: list[list[Any]]) -> int:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.blocks.append((table, columns, data))
        return len(data[0])

    def close(self) -> None:
        self.closed = True


FAST = Backoff(initial_s=0.001, cap_s=0.004)


def sink_with(fake: FakeClickHouse) -> ClickHouseSink:
    return ClickHouseSink(Settings(), backoff=FAST, client=fake)  # type: ignore[arg-type]


def test_blocks_are_deduplicated_by_stable_key_and_cases_keep_the_highest_revision() -> None:
    """A batch holding a replay and two revisions of a case sends each key once, the latest revision."""
    b = small_batch()
    case = b.cases[0]
    b.cases += [replace(case, status="closed", revision=5), replace(case, revision=2)]
    b.events += b.events[:4]
    b.transitions += b.transitions[:7]
    blocks = {spec.table: rows for spec, rows in batch_blocks(b)}
    assert len(blocks["events"]) == len({e.event_id for e in b.events})
    assert len(blocks["case_transitions"]) == len({(t.case_id, t.seq) for t in b.transitions})
    latest = [c for c in blocks["cases"] if c.case_id == case.case_id]
    assert [c.revision for c in latest] == [5]
    assert [spec.table for spec, _ in batch_blocks(b)][-1] == "cases"


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_times_are_written_as_utc_epoch_seconds(at: datetime, offset_min: int) -> None:
    """Naive times are UTC; aware times are converted; the stored number is the instant's epoch."""
    case = generate(seed=1, n_cases=1, start=T0, days=1).batches[0].cases[0]
    spec = batch_blocks(SinkBatch(cases=[case]))[-1][0]
    aware = at.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    cols = to_columns(spec, [replace(case, created_at=at, closed_at=aware)])
    named = dict(zip(spec.columns, cols, strict=True))
    assert named["created_at"] == [int(at.replace(tzinfo=UTC).timestamp())]
    assert named["closed_at"] == [int(aware.timestamp())]
    event = generate(seed=1, n_cases=1, start=T0, days=1).batches[0].events[0]
    ev_spec = batch_blocks(SinkBatch(events=[event]))[0][0]
    mixed = to_columns(ev_spec, [replace(event, received_at=at), replace(event, received_at=aware)])
    assert mixed[ev_spec.columns.index("received_at")] == [
        int(at.replace(tzinfo=UTC).timestamp()),
        int(aware.timestamp()),
    ]
    assert named["due_at"] == [
        None if case.due_at is None else int(case.due_at.replace(tzinfo=UTC).timestamp())
    ]


def test_columns_hold_every_row_in_column_order() -> None:
    """to_columns transposes rows: column i of row j is attribute i of row j (converted)."""
    b = small_batch()
    spec, rows = batch_blocks(b)[0]
    cols = to_columns(spec, rows)
    assert [len(c) for c in cols] == [len(rows)] * len(spec.columns)
    ids = cols[spec.columns.index("event_id")]
    assert ids == [r.event_id for r in rows]


def test_write_retries_while_the_server_is_down_then_stores_everything() -> None:
    """Network errors are retried (counted in .retries) and every row is stored once per attempt that won."""
    fake = FakeClickHouse(failures=3)
    sink = sink_with(fake)
    b = small_batch()
    sink.write(b)
    assert sink.retries == 3
    stored = {table: len(data[0]) for table, _, data in fake.blocks}
    assert stored == {spec.table: len(rows) for spec, rows in batch_blocks(b) if rows}


def test_a_data_error_is_rejected_not_retried() -> None:
    """A server error a retry cannot fix (e.g. type mismatch, code 53) raises SinkRejected at once."""
    fake = FakeClickHouse(failures=1, error=ch_errors.ServerException("type mismatch", code=53))
    with pytest.raises(SinkRejected, match="events"):
        sink_with(fake).write(small_batch())


def test_stop_interrupts_a_write_that_is_waiting_for_the_server() -> None:
    """stop() from another thread makes the blocked write raise SinkStopped; nothing is reported stored."""
    fake = FakeClickHouse(failures=10**9)
    sink = ClickHouseSink(Settings(), backoff=Backoff(initial_s=0.05, cap_s=0.05), client=fake)  # type: ignore[arg-type]
    threading.Timer(0.3, sink.stop).start()
    with pytest.raises(SinkStopped):
        sink.write(small_batch())
    assert sink.retries >= 1 and fake.blocks == []


def test_buffer_flushes_by_size_or_age_and_commits_only_after_storing() -> None:
    """Offsets reach `commit` after the write succeeded, the highest per partition; a failed write commits
    nothing and keeps the rows for the next flush."""
    now = [0.0]
    buf = SinkBuffer(max_rows=10_000, max_age_s=2.0, clock=lambda: now[0])
    assert not buf.due()
    buf.add(small_batch(), {("raw", 0): 5, ("raw", 1): 9})
    buf.add(small_batch(), {("raw", 0): 7})
    assert not buf.due()
    now[0] = 2.5
    assert buf.due()
    committed: list[dict[tuple[str, int], int]] = []
    failing = FakeClickHouse(failures=1, error=ch_errors.ServerException("bad", code=53))
    with pytest.raises(SinkRejected):
        buf.flush(sink_with(failing), committed.append)
    assert committed == [] and len(buf) > 0
    ok = FakeClickHouse()
    n = buf.flush(sink_with(ok), committed.append)
    assert n == 2 * len(small_batch())
    assert [t for t, _, _ in ok.blocks] == ["events", "case_transitions", "case_rounds", "cases"]  # rounds too
    assert committed == [{("raw", 0): 7, ("raw", 1): 9}]
    assert len(buf) == 0 and not buf.due()
    small = SinkBuffer(max_rows=5)
    small.add(small_batch())
    assert small.due()


def test_backoff_grows_exponentially_and_is_capped() -> None:
    """Delays double from `initial_s` up to `cap_s`, within the jitter band."""
    b = Backoff(initial_s=0.5, factor=2.0, cap_s=4.0, jitter=0.1)
    for attempt, base in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)):
        assert base * 0.9 <= b.delay(attempt) <= base * 1.1


def test_row_fields_match_the_table_columns() -> None:
    """Every field of each row type is a column (a field added in records.py must be added to the schema)."""
    row_types = [EventRow, TransitionRow, SensorReadingRow, PatrolReportRow, RoundRow, CaseRow]
    for (spec, _), row_type in zip(batch_blocks(SinkBatch()), row_types, strict=True):
        assert set(spec.columns) == set(row_type.__dataclass_fields__), spec.table
