"""The server stops mid-stream and comes back: the sink waits, retries, drains, and stores each event once."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.model.records import EventRow, SinkBatch

ROOT = Path(__file__).resolve().parents[2]
CTL = ["bash", str(ROOT / "deploy/local/clickhouse.sh")]


def event_batch(start: int, n: int) -> SinkBatch:
    t = datetime(2024, 5, 1, 8, 0)
    return SinkBatch(
        events=[
            EventRow(
                f"ev-{i}",
                "patrol",
                f"case-{i}",
                "E0501",
                "310109009001001",
                "310109009",
                t + timedelta(seconds=i),
                t + timedelta(seconds=i),
                121.5,
                31.27,
                False,
                False,
                "g1",
            )
            for i in range(start, start + n)
        ]
    )


@pytest.mark.clickhouse
def test_stopping_the_server_mid_stream_loses_and_duplicates_nothing(isolated_settings: Settings) -> None:
    """Batches written while the server is stopped block and retry; after the restart every event is stored
    exactly once (distinct ids and FINAL both equal the number sent, although some batches were replayed)."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import Backoff, ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    migrate(isolated_settings)
    sink = ClickHouseSink(isolated_settings, backoff=Backoff(initial_s=0.1, cap_s=1.0))
    n_batches, size = 60, 500
    written: list[int] = []
    failure: list[BaseException] = []

    def stream() -> None:
        try:
            for b in range(n_batches):
                sink.write(event_batch(b * size, size))
                if b % 10 == 0 and b:  # a replay from Kafka: the previous batch again
                    sink.write(event_batch((b - 1) * size, size))
                written.append(b)
                time.sleep(0.05)
        except BaseException as err:  # reported by the test thread
            failure.append(err)

    writer = threading.Thread(target=stream)
    try:
        writer.start()
        while len(written) < 10 and writer.is_alive():
            time.sleep(0.05)
        subprocess.run([*CTL, "stop"], check=True, capture_output=True)
        stopped_at = len(written)
        time.sleep(2.0)
        assert writer.is_alive() and len(written) <= stopped_at + 1, (
            "writes must block while the server is down"
        )
    finally:
        subprocess.run([*CTL, "start"], check=True, capture_output=True)
    writer.join(timeout=300)
    sink.close()
    assert not failure, failure
    assert len(written) == n_batches
    assert sink.retries > 0
    db = ClickHouse(isolated_settings)
    try:
        distinct, final = db.execute(
            "SELECT uniqExact(event_id), (SELECT count() FROM events FINAL) FROM events"
        )[0]
        assert distinct == final == n_batches * size
        ids = {r[0] for r in db.execute("SELECT DISTINCT event_id FROM events")}
        assert ids == {f"ev-{i}" for i in range(n_batches * size)}
    finally:
        db.close()
