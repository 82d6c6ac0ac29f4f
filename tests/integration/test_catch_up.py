"""A worker that starts on a backlog reads its sources level in event time (pipeline.runtime.align).

Without that, Kafka hands out about as many records of every partition per fetch: the patrol report and the
case updates of a backlog are read long before the thousands of sensor readings of the same hours. The patrol
report then opens the case the sensor's alarm should have opened, and the team's update for the alarm's case
waits for a case that does not exist yet, until a later report in the grid expires it ("no such case").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from grid.index import GridHolder
from pipeline.config import Settings
from pipeline.model.cases import case_id_for
from pipeline.model.events import TEAMS
from pipeline.sink.transport import ClickHouse
from tests.pipeline.factories import T0, hotline, patrol, raw, reading, update
from tests.support import consume, prepared_settings, produce, running_worker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TILT = (121.4780, 31.2760)
FILLERS = 20
MINUTES = 180
ALARM_AT = 120          # the tilt sensor goes beyond its alarm level from this minute on


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, ClickHouse, str, Path]]:
    tmp = tmp_path_factory.mktemp("catchup")
    s = prepared_settings("a", tmp)
    rows = [f"TILT-9,manhole_tilt,{TILT[0]},{TILT[1]},,,,"]
    rows += [f"FILL-{i},water_level,{121.47 + i * 0.001},{31.27 + (i % 5) * 0.002},,,," for i in range(FILLERS)]
    (tmp / "sensors.csv").write_text("sensor_id,sensor_type,lon,lat,category,alarm,clear,debounce\n"
                                     + "\n".join(rows) + "\n", encoding="utf-8")
    t = s.topics
    cell = GridHolder().current.locate(*TILT).cell
    assert cell, "the tilt sensor must be inside a grid cell"
    cid = case_id_for(cell[:12], "iot:TILT-9:alarm1")
    # the backlog, produced before the worker starts: three hours of readings, one a minute from each sensor
    produce(s, t.raw_iot, [
        (sid.encode(), raw(reading(sid, value, at=T0 + timedelta(minutes=m), sensor_type=kind)))
        for m in range(MINUTES)
        for sid, kind, value in [("TILT-9", "manhole_tilt", 20.0 if m >= ALARM_AT else 1.0)]
        + [(f"FILL-{i}", "water_level", 1.0) for i in range(FILLERS)]])
    # a patrol report of the same manhole ten minutes after the alarm
    produce(s, t.raw_patrol, [(None, raw(patrol("PR-CATCHUP", code="P0101", at=T0 + timedelta(minutes=ALARM_AT + 10),
                                                lon=TILT[0] + 0.0002, lat=TILT[1])))])
    # the team accepts the alarm's case (the test does not know which team it goes to: each one tries)
    accepted = T0 + timedelta(minutes=ALARM_AT + 40)
    produce(s, t.case_updates, [(cid.encode(), raw(update(cid, "accept", team, at=accepted))) for team in TEAMS])
    # a call about something else in the same grid, a day later
    produce(s, t.raw_hotline, [(None, raw(hotline("HL-CATCHUP", code="E0501", at=T0 + timedelta(hours=27),
                                                  lon=TILT[0] + 0.0003, lat=TILT[1])))])
    ch = ClickHouse(s)
    log = tmp / "worker.log"
    with running_worker(s, log, {"CITYOPS_SENSORS": str(tmp / "sensors.csv"), "CITYOPS_DLQ_MAX_RATIO": "1",
                                 # small fetches: the backlog of readings takes many, as a real one does
                                 "CITYOPS_BATCH": "100", "CITYOPS_FETCH_PARTITION_BYTES": "4096",
                                 # no patience for partitions of unknown backlog: however slow the first fetches
                                 # are (a loaded CI machine took over 2 s), the readings' known backlog is
                                 # waited for
                                 "CITYOPS_ALIGN_IDLE": "0"}):
        def stored() -> bool:
            rows = ch.query_dicts("SELECT count() AS n FROM events WHERE event_id IN "
                                  "('patrol:PR-CATCHUP', 'hotline:HL-CATCHUP', 'iot:TILT-9:alarm1')")
            # a batch's cases are stored after its events: wait until the case's row counts its stored events
            joined = ch.query_dicts(
                "SELECT (SELECT count() FROM events FINAL WHERE case_id = %(c)s) AS events, "
                "(SELECT max(reports) FROM cases WHERE case_id = %(c)s) AS reports", {"c": cid})[0]
            return int(rows[0]["n"]) >= 3 and int(joined["reports"] or 0) >= int(joined["events"])
        assert wait_for(stored, 120), log.read_text(errors="replace")[-3000:]
        yield s, ch, cid, log
    ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")


def test_the_alarm_opens_the_case_and_the_later_patrol_report_joins_it(
        backlog: tuple[Settings, ClickHouse, str, Path]) -> None:
    s, ch, cid, log = backlog
    rows = ch.query_dicts("SELECT event_id, case_id FROM events FINAL WHERE event_id IN "
                          "('patrol:PR-CATCHUP', 'iot:TILT-9:alarm1')")
    assert {r["event_id"]: r["case_id"] for r in rows} == {"patrol:PR-CATCHUP": cid, "iot:TILT-9:alarm1": cid}, \
        log.read_text(errors="replace")[-3000:]
    case = ch.query_dicts("SELECT discovered_by, reports FROM cases FINAL WHERE case_id = %(c)s", {"c": cid})
    assert case == [{"discovered_by": "sensor", "reports": 2}]


def test_the_teams_update_finds_its_case(backlog: tuple[Settings, ClickHouse, str, Path]) -> None:
    s, ch, cid, _ = backlog

    def statuses() -> list[str]:
        return [r["status"] for r in ch.query_dicts(
            "SELECT status FROM case_transitions FINAL WHERE case_id = %(c)s ORDER BY seq", {"c": cid})]
    assert wait_for(lambda: "accepted" in statuses(), 60), statuses()
    # the two other teams' accepts are refused for being the wrong team, none for a missing case
    refused = consume(s, s.topics.deadletter, lambda got: sum(cid in d["raw"] for d in got) >= 2, timeout_s=30)
    reasons = sorted(d["reason"] for d in refused if cid in d["raw"])
    assert len(reasons) == 2 and all("is assigned to" in r for r in reasons), reasons
