"""The inspectors' 有效上报率 (issue #20) on a hand-written scenario, through the worker's own steps: the patrol
decoder (what ingest refuses becomes a dead letter and, with a readable inspector, a `refused` row), the cases
stage (opened, joined, sent again), the sink's conversion, and the evaluation's SQL on current ClickHouse (chdb)
and on the server (18.16). Every expected figure is worked out by hand from this spec.

The month is March 2026 (Asia/Shanghai); minute 0 is 2 March 02:00 Shanghai (tests.pipeline.test_case_semantics).

| message | inspector (team)   | what it is                                   | what becomes of it          |
| ------- | ------------------ | -------------------------------------------- | --------------------------- |
| R1      | I1 (patrol-a)      | E0102 at minute 0                            | opens a case: filed         |
| R2      | I1 (patrol-a)      | E0102 at minute 10, 20 m away                | joins R1's case: joined     |
| R3      | I1 (patrol-a)      | no category                                  | dead letter                 |
| R1 again| I1 (patrol-a)      | the same report id sent again                | duplicate                   |
| R4      | I2 (patrol-b)      | category E9999 (not in the taxonomy)         | dead letter                 |
| R4 fixed| I2 (patrol-b)      | the same id, E0501, minute 30, 900 m away    | opens a case: filed         |
| R5      | (none)             | no inspector                                 | dead letter, no row         |
| R6      | I2 (patrol-b)      | E0501 on 28 February (Shanghai), 2 km away   | filed, but not in March     |
| R7      | I3 (patrol-a)      | latitude 95                                  | dead letter                 |

By hand, March 2026:
- I1: reports {R1, R2, R3} = 3; valid {R1, R2} = 2; refused {R3} = 1; sent again {R1} = 1; rate 2/3;
- I2: reports {R4} = 1 (R6 is February's); valid 1 (refused first, applied once fixed); refused 0; rate 1;
- I3: reports {R7} = 1; valid 0; refused 1; rate 0.
`--team patrol-a`: I1 and I3 only. `--subdistrict 310109009` (where every located report is): I1 and I2 (I3 has
no located report). February: I2 with R6 alone, rate 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import orjson
import pytest

from pipeline.model.records import SinkBatch
from pipeline.reports.evaluation import evaluate
from pipeline.reports.query import Filters
from pipeline.stages.cases import CaseBook, Outcome
from pipeline.stages.casestage import CaseStage
from pipeline.stages.decode import default_decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.stages.patrolreports import refused
from pipeline.wire import DeadLetter
from tests.analytics.lifecycle import ENGINES, Engine, engine_fixture
from tests.pipeline.test_case_semantics import EAST_100M, LAT, LOC, LON, at, rules, stage_items

MARCH = (date(2026, 3, 1), date(2026, 4, 1))
FEBRUARY = (date(2026, 2, 1), date(2026, 3, 1))
TOPIC = "cityops.raw.patrol"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


def msg(report: str, inspector: str | None, team: str, minutes: float, category: str | None, *,
        east_m: float = 0.0, lat: float = LAT) -> bytes:
    obj: dict[str, Any] = {"report_id": report, "team": team, "observed_at": at(minutes).isoformat(),
                           "lon": LON + east_m / 100 * EAST_100M, "lat": lat}
    if inspector is not None:
        obj["inspector"] = inspector
    if category is not None:
        obj["category"] = category
    return orjson.dumps(obj)


SCENARIO = [
    msg("R1", "I1", "patrol-a", 0, "E0102"),
    msg("R2", "I1", "patrol-a", 10, "E0102", east_m=20),
    msg("R3", "I1", "patrol-a", 12, None),
    msg("R1", "I1", "patrol-a", 0, "E0102"),
    msg("R4", "I2", "patrol-b", 20, "E9999"),
    msg("R4", "I2", "patrol-b", 30, "E0501", east_m=900),
    msg("R5", None, "patrol-b", 40, "E0501"),
    msg("R6", "I2", "patrol-b", -2 * 24 * 60, "E0501", east_m=2000),
    msg("R7", "I3", "patrol-a", 50, "E0501", lat=95.0),
]


def run_scenario() -> SinkBatch:
    """Each message through the decoder, then (accepted) the cases stage, one at a time as the worker would
    take them; the rows the worker would store."""
    decoder = default_decoder()
    stage = CaseStage(rules())
    books: dict[str, CaseBook] = {}
    out = Outcome()
    batch = SinkBatch()
    for offset, raw in enumerate(SCENARIO):
        try:
            event = decoder.patrol(raw)
        except InvalidEvent as err:
            batch.patrol_reports += refused([DeadLetter(TOPIC, 0, offset, err.reason, raw, at(60))])
            continue
        out.extend(stage.apply(stage_items(replace(event, location=LOC)), books))
    batch.cases += out.cases.values()
    batch.events += out.events
    batch.transitions += out.transitions
    batch.rounds += out.rounds.values()
    batch.patrol_reports += out.patrol_reports
    return batch


def inspectors(engine: Engine, month: tuple[date, date], **filters: str) -> dict[str, dict[str, Any]]:
    units = evaluate(engine.db, "position", Filters(**filters), *month, patrols=[])  # type: ignore[arg-type]
    return {u.unit: dict(u.values) | {"score": u.score} for u in units if u.of == "position.inspector"}


def test_the_rows_of_the_scenario() -> None:
    rows = sorted((r.inspector, r.report_id, r.outcome) for r in run_scenario().patrol_reports)
    assert rows == [
        ("I1", "patrol:R1", "duplicate"), ("I1", "patrol:R1", "filed"), ("I1", "patrol:R2", "joined"),
        ("I1", "patrol:R3", "dead_letter"),
        ("I2", "patrol:R4", "dead_letter"), ("I2", "patrol:R4", "filed"), ("I2", "patrol:R6", "filed"),
        ("I3", "patrol:R7", "dead_letter"),
    ]


def test_valid_report_rate_of_the_hand_built_month(engine: Engine) -> None:
    engine.write(run_scenario())
    got = inspectors(engine, MARCH)
    assert got == {
        "I1": {"reports": 3, "valid": 2, "refused": 1, "duplicates": 1, "valid_rate": pytest.approx(2 / 3),
               "score": pytest.approx(66.67)},
        "I2": {"reports": 1, "valid": 1, "refused": 0, "duplicates": 0, "valid_rate": 1.0, "score": 100.0},
        "I3": {"reports": 1, "valid": 0, "refused": 1, "duplicates": 0, "valid_rate": 0.0, "score": 0.0},
    }
    assert set(inspectors(engine, MARCH, team="patrol-a")) == {"I1", "I3"}
    assert set(inspectors(engine, MARCH, subdistrict="310109009")) == {"I1", "I2"}
    assert inspectors(engine, FEBRUARY) == {
        "I2": {"reports": 1, "valid": 1, "refused": 0, "duplicates": 0, "valid_rate": 1.0, "score": 100.0}}


def test_a_replayed_batch_changes_no_figure(engine: Engine) -> None:
    batch = run_scenario()
    engine.write(batch)
    engine.write(batch)
    assert inspectors(engine, MARCH)["I1"]["reports"] == 3
    assert inspectors(engine, MARCH)["I1"]["valid_rate"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("observed_at", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-14:00",
                                         "1969-12-31T23:59:59Z", "2026-03-02T02:00:00", "soon", ""])
def test_a_refused_reports_unstorable_time_becomes_the_refusal_time(observed_at: str) -> None:
    """A hostile `observed_at` (out of DateTime's range, without an offset, not a time) never makes the row
    unstorable: the row takes the refusal's time."""
    raw = orjson.dumps({"report_id": "R9", "inspector": "I9", "observed_at": observed_at})
    (row,) = refused([DeadLetter(TOPIC, 0, 1, "category: required", raw, at(60))])
    assert row.observed_at == at(60)


def test_a_refused_reports_readable_time_is_kept() -> None:
    raw = orjson.dumps({"report_id": "R9", "inspector": "I9", "observed_at": "2026-03-02T02:00:00+08:00"})
    (row,) = refused([DeadLetter(TOPIC, 0, 1, "category: required", raw, at(60))])
    assert row.observed_at == at(0)
