"""A first case end to end: a hotline ticket on the raw topic becomes an assignment and ClickHouse rows;
a malformed message becomes a dead letter with a reason. Real broker, real server, real worker process."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.runtime.topics import ensure_topics
from pipeline.sink.migrate import migrate
from pipeline.sink.transport import ClickHouse
from tests.pipeline.factories import hotline, raw
from tests.support import consume, produce, running_worker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def test_hotline_ticket_flows_to_assignment_and_clickhouse(isolated_settings: Settings, tmp_path: Path) -> None:
    s = isolated_settings
    ensure_topics(s)
    migrate(s)
    ticket = hotline("E2E-1", code="E0501", description="王小明说路口有无照摊贩，电话13912345678")
    produce(s, s.topics.raw_hotline, [(b"E2E-1", raw(ticket)), (b"E2E-1", b'{"service_request_id": "E2E-2"')])

    with running_worker(s, tmp_path / "worker.log"):
        assignments = consume(s, s.topics.assignments, lambda got: len(got) >= 1)
        dead = consume(s, s.topics.deadletter, lambda got: len(got) >= 1)
        ch = ClickHouse(s)

        def stored() -> bool:
            # the sink stores a batch's cases after its events: wait for the case row too
            rows = ch.query_dicts("SELECT count() AS n FROM cases WHERE case_id IN "
                                  "(SELECT case_id FROM events WHERE event_id = %(id)s)", {"id": "hotline:E2E-1"})
            return bool(rows and rows[0]["n"] >= 1)

        assert wait_for(stored, timeout_s=60), (tmp_path / "worker.log").read_text()[-3000:]

    assert len(assignments) == 1, (tmp_path / "worker.log").read_text()[-3000:]
    a = assignments[0]
    assert a["team"] == "enforcement" and a["category"] == "E0501"
    assert a["rule_id"] and a["reason"] and a["sources"] == ["hotline"]
    assert a["cell"].startswith("310109") and len(a["cell"]) == 15
    case_id = a["case_id"]

    cases = ch.query_dicts(
        "SELECT case_id, category, discovered_by, team, status, reports FROM cases FINAL WHERE case_id = %(c)s",
        {"c": case_id})
    assert cases == [{"case_id": case_id, "category": "E0501", "discovered_by": "citizen", "team": "enforcement",
                      "status": "dispatched", "reports": 1}]
    events = ch.query_dicts("SELECT event_id, source, case_id, description FROM events FINAL "
                            "WHERE event_id = 'hotline:E2E-1'")
    assert events[0]["case_id"] == case_id and events[0]["source"] == "hotline"
    assert "王小明" not in events[0]["description"] and "13912345678" not in events[0]["description"]

    (d,) = dead
    assert d["source_topic"] == s.topics.raw_hotline and d["offset"] == 1 and d["partition"] >= 0
    assert "not valid UTF-8 JSON" in d["reason"]
    assert orjson.dumps(d).find(b"13912345678") == -1
