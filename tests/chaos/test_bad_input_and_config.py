"""Issue #10.5 and #10.6 through the real worker: 10,000 hostile messages per input topic each end as one dead
letter with a reason while the worker stays up; a flood of bad input stops the worker loudly when the
dead-letter cap is on; and a corrupted rules file, grid file or sensor registry is refused at runtime while
the running version keeps working."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from grid import CELLS_FILE
from pipeline.sink.transport import ClickHouse, QueryError
from rules.engine import DEFAULT_RULES
from tests import fuzz
from tests.chaos.harness import ChaosPipeline, isolated, json_messages, produce_stream, query, stream
from tests.pipeline.factories import T0, hotline, raw, reading
from tests.support import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

PER_TOPIC = 10_000
FEED_TOPIC = {"hotline": "raw_hotline", "patrol": "raw_patrol", "iot": "raw_iot", "case_updates": "case_updates"}


def empty_pipeline(tmp: Path, name: str, **env: str) -> Any:
    """An isolated pipeline whose registry is the fuzz corpus' one sensor (plus TILT-1 for the config test)."""
    p = isolated(tmp, stream(sensors=10, hotline_per_day=50, seed=2), name, **env)
    (tmp / "sensors.csv").write_text(fuzz.SENSOR_REGISTRY_CSV + "TILT-1,manhole_tilt,121.4780,31.2760\n",
                                     encoding="utf-8")
    return p


def test_ten_thousand_hostile_messages_per_topic_all_become_dead_letters(tmp_path: Path) -> None:
    """40,000 hostile messages, produced in bulk: one dead letter each (distinct offsets), each with a reason
    and nothing else; the worker is still running at the end."""
    with empty_pipeline(tmp_path, "fuzzw", CITYOPS_DLQ_MAX_RATIO="1") as p:
        sent: list[tuple[str, bytes | None, bytes]] = []
        for feed, topic in FEED_TOPIC.items():
            sent += [(topic, f"k{i % 97}".encode(), msg) for i, (_, msg) in enumerate(fuzz.corpus(feed, PER_TOPIC))]
        produce_stream(p.settings, sent)
        worker = p.start_worker(0)
        t = p.settings.topics

        def all_dead() -> bool:
            assert worker.poll() is None, p.tail(0)
            return len(json_messages(p.settings, t.deadletter)) >= len(sent)
        assert wait_for(all_dead, 600, every_s=5.0), p.tail(0)
        dead = json_messages(p.settings, t.deadletter)
        for topic in FEED_TOPIC.values():
            mine = [d for d in dead if d["source_topic"] == getattr(t, topic)]
            assert len({(d["partition"], d["offset"]) for d in mine}) == len(mine) == PER_TOPIC, topic
            assert all(str(d["reason"]).strip() for d in mine)
        # nothing located: only the ingest's progress marks (pipeline.wire.encode_marks)
        assert [m for m in json_messages(p.settings, t.located) if m.get("type") != "marks"] == []
        assert json_messages(p.settings, t.assignments) == []
        assert query(p, "SELECT count() FROM events")[0][0] == 0
        assert worker.poll() is None, p.tail(0)


def test_a_flood_of_bad_input_stops_the_worker_loudly(tmp_path: Path) -> None:
    """With the dead-letter cap on (the default 50 %), 2,000 garbage messages stop the worker: it exits with a
    non-zero status and says why, instead of dead-lettering a bad upstream deploy forever."""
    with empty_pipeline(tmp_path, "dlqcap") as p:
        produce_stream(p.settings, [("raw_patrol", None, b"not json %d" % i) for i in range(2_000)])
        worker = p.start_worker(0)
        assert wait_for(lambda: worker.poll() is not None, 240, every_s=1.0), \
            "the worker kept running:\n" + p.tail(0)
        assert worker.returncode != 0
        assert "dead-lettered" in p.logs() and "limit" in p.logs()


def wait_event(p: ChaosPipeline, event_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """The stored event and its case's ruleset version, once the event is stored (the shared server may be
    restarted by other tests meanwhile: that only delays the answer)."""
    def stored() -> bool:
        # the sink stores a batch's cases after its events: wait for the event's case row too
        try:
            return bool(query(p, "SELECT count() FROM cases WHERE case_id IN "
                                 f"(SELECT case_id FROM events WHERE event_id = '{event_id}')", 5)[0][0])
        except QueryError:
            return False
    assert wait_for(stored, timeout_s), f"{event_id} not stored:\n{p.tail(0)}"
    query(p, "SELECT 1")
    db = ClickHouse(p.settings)
    try:
        (row,) = db.query_dicts("SELECT event_id, grid_version, case_id FROM events FINAL WHERE event_id = %(e)s",
                                {"e": event_id})
        (case,) = db.query_dicts("SELECT ruleset_version FROM cases FINAL WHERE case_id = %(c)s",
                                 {"c": row["case_id"]})
        return row | case
    finally:
        db.close()


def send_ticket(p: ChaosPipeline, n: int) -> str:
    tid = f"CFG-{uuid.uuid4().hex[:6]}-{n}"
    produce_stream(p.settings, [("raw_hotline", tid.encode(),
                                 raw(hotline(tid, code="E0501", lon=121.4905 + n * 0.003, lat=31.2650)))])
    return f"hotline:{tid}"


def send_alarm(p: ChaosPipeline, sensor: str, start_min: int) -> str:
    values = [16.0, 17.0, 18.0]
    produce_stream(p.settings, [("raw_iot", sensor.encode(),
                                 raw(reading(sensor, v, at=T0 + timedelta(minutes=start_min + i))))
                                for i, v in enumerate(values)])
    return f"iot:{sensor}:alarm1"


def test_corrupted_rules_grid_and_registry_are_refused_and_the_running_versions_stay(tmp_path: Path) -> None:
    rules, grid, sensors = tmp_path / "rules.yaml", tmp_path / "cells.geojson", tmp_path / "sensors.csv"
    shutil.copy(DEFAULT_RULES, rules)
    shutil.copy(CELLS_FILE, grid)
    with empty_pipeline(tmp_path, "badcfg", CITYOPS_RULES=str(rules), CITYOPS_GRID=str(grid),
                        CITYOPS_DLQ_MAX_RATIO="1") as p:
        worker = p.start_worker(0)
        before = wait_event(p, send_ticket(p, 0))
        sensor_before = wait_event(p, send_alarm(p, "TILT-1", 0))
        # three corrupted files, as an editor or a half-finished copy would leave them
        rules.write_text(rules.read_text(encoding="utf-8")[:200] + "\n  - {when: [unclosed\n", encoding="utf-8")
        grid.write_bytes(grid.read_bytes()[: grid.stat().st_size // 2])
        sensors.write_text("sensor_id,sensor_type,lon,lat\nNEW-1,manhole_tilt,not-a-number,31.27\n",
                           encoding="utf-8")
        time.sleep(5)                       # the worker looks for changed files every 2 s, on its next batch
        after = wait_event(p, send_ticket(p, 1))
        assert (after["ruleset_version"], after["grid_version"]) == \
            (before["ruleset_version"], before["grid_version"])
        # the registry that was running still knows TILT-1 (its second alarm needs it)
        produce_stream(p.settings, [("raw_iot", b"TILT-1", raw(reading("TILT-1", 1.0, at=T0 + timedelta(minutes=30))))])
        wait_event(p, send_alarm(p, "TILT-1", 31).replace("alarm1", "alarm2"))
        logs = p.logs()
        assert "refused" in logs, logs[-3000:]
        assert worker.poll() is None, p.tail(0)
        # a correct registry is picked up at runtime: a sensor added now raises its own alarm
        sensors.write_text(fuzz.SENSOR_REGISTRY_CSV + "TILT-1,manhole_tilt,121.4780,31.2760\n"
                           "NEW-1,manhole_tilt,121.4850,31.2700\n", encoding="utf-8")
        time.sleep(5)
        produce_stream(p.settings, [("raw_iot", b"NEW-1", raw(reading("NEW-1", 1.0, at=T0)))])
        time.sleep(3)
        wait_event(p, send_alarm(p, "NEW-1", 1))
        assert sensor_before["grid_version"] == before["grid_version"]
