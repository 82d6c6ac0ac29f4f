"""The stream workers against the real broker and server: every source, merging, sensor alarms, the whole case
lifecycle, refusals, dead letters, replays and two workers in one group. One worker process serves the module;
each test uses its own ids and places so the tests do not see each other's cases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.sink.transport import ClickHouse
from tests.pipeline.factories import T0, hotline, patrol, raw, reading, update
from tests.support import consume, prepared_settings, produce, running_worker, stop_process, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

# Places inside Hongkou, far enough apart (> 500 m) that their cases never merge by accident.
NORTH = (121.4830, 31.2880)
CENTRE = (121.4905, 31.2650)
EAST = (121.5050, 31.2600)
SOUTH = (121.4950, 31.2520)
WARM_UP = (121.4700, 31.2700)
SENSORS = ("sensor_id,sensor_type,lon,lat,category,alarm,clear,debounce\n"
           "TILT-1,manhole_tilt,121.4780,31.2760,,,,\n"
           "WATER-1,water_level,121.4860,31.2700,,,,\n")


@dataclass
class Pipeline:
    settings: Settings
    log: Path
    ch: ClickHouse

    def send(self, topic: str, *messages: dict[str, Any] | bytes, key: bytes | None = None) -> None:
        produce(self.settings, topic, [(key, m if isinstance(m, bytes) else raw(m)) for m in messages])

    def assignments(self, n: int, case_ids: set[str] | None = None, timeout_s: float = 60) -> list[dict[str, Any]]:
        def mine(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [a for a in got if case_ids is None or a["case_id"] in case_ids]
        return mine(consume(self.settings, self.settings.topics.assignments, lambda g: len(mine(g)) >= n, timeout_s))

    def assignments_for_events(self, event_ids: set[str], n: int) -> list[dict[str, Any]]:
        case_ids = self.case_ids(event_ids)
        return self.assignments(n, case_ids)

    def case_ids(self, event_ids: set[str], timeout_s: float = 60) -> set[str]:
        def stored() -> bool:
            # a batch's cases are stored after its events: wait for the events and for their cases' rows
            rows = self.ch.query_dicts(
                "SELECT (SELECT uniqExact(event_id) FROM events WHERE event_id IN %(ids)s) AS n, "
                "(SELECT uniqExact(case_id) FROM events WHERE event_id IN %(ids)s) AS c, "
                "(SELECT uniqExact(case_id) FROM cases WHERE case_id IN "
                "(SELECT case_id FROM events WHERE event_id IN %(ids)s)) AS k", {"ids": tuple(event_ids)})
            return int(rows[0]["n"]) == len(event_ids) and int(rows[0]["k"]) == int(rows[0]["c"])
        assert wait_for(stored, timeout_s), self.tail()
        rows = self.ch.query_dicts("SELECT DISTINCT case_id FROM events FINAL WHERE event_id IN %(ids)s",
                                   {"ids": tuple(event_ids)})
        return {r["case_id"] for r in rows}

    def case(self, case_id: str) -> dict[str, Any]:
        """The case's row; an assignment is sent before the batch's rows are stored, so wait for it."""
        def query() -> list[dict[str, Any]]:
            return self.ch.query_dicts("SELECT * FROM cases FINAL WHERE case_id = %(c)s", {"c": case_id})
        assert wait_for(lambda: bool(query()), 60), self.tail()
        rows = query()
        assert len(rows) == 1
        return rows[0]

    def wait_case(self, case_id: str, **expected: Any) -> dict[str, Any]:
        def matches() -> bool:
            rows = self.ch.query_dicts("SELECT * FROM cases FINAL WHERE case_id = %(c)s", {"c": case_id})
            return bool(rows) and all(rows[0][k] == v for k, v in expected.items())
        assert wait_for(matches, 60), (self.case(case_id), self.tail())
        return self.case(case_id)

    def deadletters(self, pred: Any, n: int = 1) -> list[dict[str, Any]]:
        got = consume(self.settings, self.settings.topics.deadletter, lambda g: len([d for d in g if pred(d)]) >= n)
        return [d for d in got if pred(d)]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("workers")
    s = prepared_settings("w", tmp)
    (tmp / "sensors.csv").write_text(SENSORS, encoding="utf-8")
    p = Pipeline(settings=s, log=tmp / "worker.log", ch=ClickHouse(s))
    with running_worker(s, p.log, {"CITYOPS_SENSORS": str(tmp / "sensors.csv"), "CITYOPS_DLQ_MAX_RATIO": "1"}):
        # warm up: the worker's start (loading the grid and rules, joining both groups) is not part of any
        # test's wait; a category and place no test uses, so this case meets nobody's
        warm = uid("HL-WARM")
        p.send(s.topics.raw_hotline, hotline(warm, code="E0117", lon=WARM_UP[0], lat=WARM_UP[1]))
        p.case_ids({f"hotline:{warm}"}, timeout_s=180)
        yield p
    p.ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_patrol_report_becomes_a_case_discovered_by_patrol(pipeline: Pipeline) -> None:
    rid = uid("PR")
    pipeline.send(pipeline.settings.topics.raw_patrol, patrol(rid, code="E0102", lon=NORTH[0], lat=NORTH[1]))
    (a,) = pipeline.assignments_for_events({f"patrol:{rid}"}, 1)
    case = pipeline.case(a["case_id"])
    assert case["discovered_by"] == "patrol" and case["category"] == "E0102" and a["sources"] == ["patrol"]


def test_reports_from_two_sources_merge_into_one_case(pipeline: Pipeline) -> None:
    rid, tid = uid("PR"), uid("HL")
    pipeline.send(pipeline.settings.topics.raw_patrol, patrol(rid, code="E0501", lon=EAST[0], lat=EAST[1]))
    # the same vendor, 40 m away, called in 20 minutes later
    pipeline.send(pipeline.settings.topics.raw_hotline,
                  hotline(tid, code="E0501", at=T0 + timedelta(minutes=20), lon=EAST[0] + 0.0004, lat=EAST[1]))
    (case_id,) = pipeline.case_ids({f"patrol:{rid}", f"hotline:{tid}"})
    case = pipeline.wait_case(case_id, reports=2)
    assert case["discovered_by"] == "patrol" and sorted(case["sources"]) == ["hotline", "patrol"]
    assert len(pipeline.assignments(1, {case_id})) == 1


def test_flapping_sensor_opens_one_case_and_a_call_joins_it(pipeline: Pipeline) -> None:
    values = [1, 16, 3, 16, 17, 14, 16, 12, 18, 16, 13]   # crosses 15 twice in a row at 16,17 then stays in band
    pipeline.send(pipeline.settings.topics.raw_iot,
                  *[reading("TILT-1", v, at=T0 + timedelta(minutes=i)) for i, v in enumerate(values)], key=b"TILT-1")
    tid = uid("HL")
    pipeline.send(pipeline.settings.topics.raw_hotline,
                  hotline(tid, code="P0101", at=T0 + timedelta(minutes=30), lon=121.4781, lat=31.2761,
                          description="井盖翘起来了"))
    (case_id,) = pipeline.case_ids({"iot:TILT-1:alarm1", f"hotline:{tid}"})
    case = pipeline.wait_case(case_id, reports=2)
    assert case["discovered_by"] == "sensor" and sorted(case["sources"]) == ["hotline", "iot"]
    rows = pipeline.ch.query_dicts("SELECT count() AS n FROM events FINAL WHERE event_id LIKE 'iot:TILT-1:%%'")
    assert rows[0]["n"] == 1
    # sensor-minute rows are stored at the ingest stage's checkpoint, which may come after the case is stored

    def readings() -> int:
        return int(pipeline.ch.query_dicts(
            "SELECT sum(readings) AS n FROM sensor_readings FINAL WHERE sensor_id = 'TILT-1'")[0]["n"] or 0)
    wait_for(lambda: readings() >= len(values), timeout_s=30)
    assert readings() == len(values)


def test_full_lifecycle_with_reject_rework_and_escalation(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    tid = uid("HL")
    pipeline.send(t.raw_hotline, hotline(tid, code="E0102", lon=SOUTH[0], lat=SOUTH[1]))
    (first,) = pipeline.assignments_for_events({f"hotline:{tid}"}, 1)
    cid, team = first["case_id"], first["team"]
    at = T0 + timedelta(minutes=10)
    pipeline.send(t.case_updates, update(cid, "reject", team, at=at, note="wrong team"), key=cid.encode())
    rerouted = [a for a in pipeline.assignments(2, {cid}) if a["kind"] == "reroute"]
    assert len(rerouted) == 1 and "rejected by" in rerouted[0]["reason"]
    new_team = rerouted[0]["team"]
    checker = "patrol" if new_team == "supervision" else "supervision"     # nobody checks their own work
    steps = [("accept", new_team, 20), ("resolve", new_team, 60), ("verify", checker, 90), ("reopen", checker, 120)]
    for action, who, minutes in steps:
        pipeline.send(t.case_updates, update(cid, action, who, at=T0 + timedelta(minutes=minutes)), key=cid.encode())
    case = pipeline.wait_case(cid, reopened=1, status="dispatched")
    assert case["closed_at"] is None
    # a much later report in the same grid moves the stream clock past the due time: the case escalates
    late = uid("HL")
    pipeline.send(t.raw_hotline, hotline(late, code="E0201", at=T0 + timedelta(days=2),
                                         lon=SOUTH[0] + 0.0002, lat=SOUTH[1]))
    # assignments are keyed by team, so across partitions they arrive in any order: order them by time
    kinds = [a["kind"] for a in sorted(pipeline.assignments(4, {cid}), key=lambda a: a["created_at"])]
    assert kinds == ["dispatch", "reroute", "rework", "escalation"]

    def stored() -> list[str]:
        return [r["status"] for r in pipeline.ch.query_dicts(
            "SELECT status FROM case_transitions FINAL WHERE case_id = %(c)s ORDER BY seq", {"c": cid})]
    # an assignment goes out as soon as it is made; its rows are stored at the stage's next checkpoint
    wait_for(lambda: "escalated" in stored(), timeout_s=30)
    assert stored() == ["new", "dispatched", "rejected", "dispatched", "accepted", "resolved", "verified", "closed",
                        "reopened", "dispatched", "escalated"]


def test_impossible_transitions_are_refused_and_reported(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    tid = uid("HL")
    pipeline.send(t.raw_hotline, hotline(tid, code="E0301", lon=CENTRE[0], lat=CENTRE[1]))
    (a,) = pipeline.assignments_for_events({f"hotline:{tid}"}, 1)
    cid = a["case_id"]
    other = next(x for x in ("enforcement", "handling", "supervision") if x != a["team"] and x != "supervision")
    pipeline.send(t.case_updates, update(cid, "resolve", other), update(cid, "verify", "supervision"),
                  key=cid.encode())
    refused = pipeline.deadletters(lambda d: d["reason"].startswith("refused:") and cid in d["reason"], 2)
    reasons = " | ".join(d["reason"] for d in refused)
    assert f"assigned to {a['team']}, not {other}" in reasons and "cannot verify a case that is dispatched" in reasons
    assert pipeline.case(cid)["status"] == "dispatched"


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("raw_hotline", b"{not json", "not valid UTF-8 JSON"),
    ("raw_hotline", raw(hotline("BAD-CAT", code="Z9999")), "unknown category code 'Z9999'"),
    ("raw_patrol", raw({"report_id": "P-no-pos", "observed_at": "2026-11-20T01:00:00Z"}), "team: required"),
    ("raw_iot", raw(reading("TILT-1", "high")), "value: must be a number"),  # type: ignore[arg-type]
    ("raw_iot", raw(reading("WATER-1", 3.0, sensor_type="smoke")), "does not match the registry"),
    ("case_updates", raw(update("not-a-case", "accept", "handling")), "case_id: not a cityops case id"),
    ("raw_hotline", raw(hotline("SWAP", lon=31.26, lat=121.49)), "lat/lon swapped?"),
])
def test_each_kind_of_bad_input_is_dead_lettered(pipeline: Pipeline, topic: str, payload: bytes, reason: str) -> None:
    source = getattr(pipeline.settings.topics, topic)
    marker = uuid.uuid4().hex[:8].encode()
    pipeline.send(source, payload, key=marker)
    (d,) = pipeline.deadletters(lambda d: d["source_topic"] == source and reason in d["reason"])
    assert d["offset"] >= 0 and d["raw"]


def test_replaying_input_changes_nothing_downstream(pipeline: Pipeline) -> None:
    t = pipeline.settings.topics
    tid, rid = uid("HL"), uid("PR")
    ticket = hotline(tid, code="E0106", lon=NORTH[0] + 0.004, lat=NORTH[1] - 0.002)
    report = patrol(rid, code="E0106", at=T0 + timedelta(minutes=5), lon=NORTH[0] + 0.004, lat=NORTH[1] - 0.002)
    pipeline.send(t.raw_hotline, ticket)
    pipeline.send(t.raw_patrol, report)
    (cid,) = pipeline.case_ids({f"hotline:{tid}", f"patrol:{rid}"})
    pipeline.wait_case(cid, reports=2)

    def snapshot() -> tuple[Any, ...]:
        # escalations are left out: the worker's SLA timer may escalate the case at any moment (by design)
        q = pipeline.ch.query_dicts
        return (
            q("SELECT count() AS n FROM events WHERE case_id = %(c)s", {"c": cid})[0]["n"],
            q("SELECT count() AS n FROM case_transitions FINAL WHERE case_id = %(c)s AND status != 'escalated'",
              {"c": cid})[0]["n"],
            pipeline.case(cid)["reports"],
            len([a for a in pipeline.assignments(1, {cid}) if a["kind"] != "escalation"]),
        )

    before = snapshot()
    pipeline.send(t.raw_hotline, ticket)           # the same messages again, as after a crash or on purpose
    pipeline.send(t.raw_patrol, report)
    marker = uid("HL")                             # a later message proves the replay was processed
    pipeline.send(t.raw_hotline, hotline(marker, code="E0507", lon=EAST[0] - 0.004, lat=EAST[1] + 0.003))
    pipeline.case_ids({f"hotline:{marker}"})
    assert snapshot() == before


def test_two_workers_in_one_group_lose_and_double_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    t = pipeline.settings.topics
    ids = [uid("G") for _ in range(60)]
    # 60 tickets in 60 different places around the district, so each opens its own case
    msgs = [hotline(i, code="E0104", at=T0 + timedelta(minutes=n),
                    lon=121.470 + (n % 10) * 0.003, lat=31.255 + (n // 10) * 0.004) for n, i in enumerate(ids)]
    with running_worker(pipeline.settings, tmp_path / "second.log",
                        {"CITYOPS_SENSORS": str(pipeline.settings.var_dir / "sensors.csv")}) as second:
        pipeline.send(t.raw_hotline, *msgs[:30])
        pipeline.case_ids({f"hotline:{i}" for i in ids[:30]}, timeout_s=120)
        stop_process(second)                       # the second worker leaves mid-stream: a rebalance
        pipeline.send(t.raw_hotline, *msgs[30:])
    event_ids = {f"hotline:{i}" for i in ids}
    case_ids = pipeline.case_ids(event_ids, timeout_s=120)
    rows = pipeline.ch.query_dicts(
        "SELECT count() AS n, uniqExact(case_id) AS u FROM cases FINAL WHERE case_id IN %(c)s", {"c": tuple(case_ids)})
    assert rows[0]["n"] == rows[0]["u"] == len(case_ids)
    assigned = pipeline.assignments(len(case_ids), case_ids, timeout_s=120)
    dispatches = [a for a in assigned if a["kind"] == "dispatch"]
    assert len({a["case_id"] for a in dispatches}) == len(case_ids)
    by_case: dict[str, set[str]] = {}
    for a in dispatches:
        by_case.setdefault(a["case_id"], set()).add(a["assignment_id"])
    assert all(len(v) == 1 for v in by_case.values())   # a repeat (after the rebalance) has the same id


def test_the_worker_stores_what_became_of_each_patrol_report_per_inspector(pipeline: Pipeline) -> None:
    """有效上报率 (issue #20): of one inspector's four messages, one opens a case, then comes again, one names no
    category of the taxonomy and one has a latitude of 95: 3 reports, 1 valid, 2 refused, 1 sent again."""
    from datetime import date

    from pipeline.reports.evaluation import evaluate
    from pipeline.reports.query import Filters

    inspector, ok = uid("INSP"), uid("PR")
    topic = pipeline.settings.topics.raw_patrol
    pipeline.send(topic, patrol(ok, code="E0102", lon=EAST[0], lat=EAST[1], inspector=inspector))
    pipeline.case_ids({f"patrol:{ok}"})
    pipeline.send(topic, patrol(ok, code="E0102", lon=EAST[0], lat=EAST[1], inspector=inspector),
                  patrol(uid("PR"), code="E9999", inspector=inspector),
                  patrol(uid("PR"), lat=95.0, inspector=inspector))

    def outcomes() -> list[str]:
        rows = pipeline.ch.query_dicts("SELECT outcome FROM patrol_reports FINAL WHERE inspector = %(i)s "
                                       "ORDER BY outcome", {"i": inspector})
        return [str(r["outcome"]) for r in rows]
    assert wait_for(lambda: len(outcomes()) == 4, 60), (outcomes(), pipeline.tail())
    assert outcomes() == ["dead_letter", "dead_letter", "duplicate", "filed"]
    units = evaluate(pipeline.ch, "position", Filters(team="patrol-ouyang"), date(2026, 11, 1), date(2026, 12, 1),
                     patrols=[])
    (got,) = [u.values for u in units if u.of == "position.inspector" and u.unit == inspector]
    assert got == {"reports": 3, "valid": 1, "refused": 2, "duplicates": 1, "valid_rate": pytest.approx(1 / 3)}
