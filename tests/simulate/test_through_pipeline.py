"""The truth against the worker's own processing chain, run in process (no Kafka): the same decoder, grid,
gazetteer, sensor registry, correlation and rules must make exactly the cases the truth says."""

from __future__ import annotations

from collections import Counter
from itertools import groupby

from pipeline.cases import CaseBook, CorrelationPolicy
from pipeline.decode import default_decoder
from pipeline.flow import CaseStage, Ingest, Message
from pipeline.sensors import SensorState, load_registry, load_types

SOURCE = {"raw_hotline": "hotline", "raw_patrol": "patrol"}


def _run(sim, messages, world, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "sensors.csv"
    sim.write_registry(path)
    ingest = Ingest(decoder=default_decoder(), grid=world.index, gazetteer=world.gazetteer,
                    sensors=load_registry(path, load_types()))
    stage = CaseStage(world.rules, CorrelationPolicy())
    books: dict[str, CaseBook] = {}
    states: dict[str, SensorState] = {}
    dead = Counter()
    unlocated = 0
    cases: dict = {}
    offset = 0
    # runs of one topic at a time, in time order: what a worker sees when nothing lags
    for topic, run in groupby(messages, key=lambda m: m.topic):
        batch = []
        for m in run:
            batch.append(Message(topic, 0, offset, m.value, m.key))
            offset += 1
        if topic in SOURCE:
            res = ingest.reports(SOURCE[topic], batch)  # type: ignore[arg-type]
        elif topic == "raw_iot":
            res = ingest.readings(batch, states)
        else:
            res = ingest.updates(batch)
        dead[topic] += len(res.deadletters)
        unlocated += len(res.unlocated)
        out = stage.apply(res.located, books)
        assert not out.refusals, out.refusals[:3]
        cases.update(out.states)
    return cases, dead, unlocated


def test_the_pipeline_makes_exactly_the_cases_of_the_truth(sim, messages, world, tmp_path):
    """Case ids, first sources, cells, teams, statuses, reopen counts and hot-spot cases all agree."""
    cases, dead, unlocated = _run(sim, messages, world, tmp_path)
    truth = sim.truth.to_json()
    expected = {i["case_id"]: i for i in truth["incidents"]}
    assert set(cases) == set(expected)
    for cid, got in cases.items():
        want = expected[cid]
        assert got["discovered_by"] == want["discovered_by"], cid
        assert got["cell"] == want["cell"] and got["category"] == want["category"], cid
        assert got["team"] == want["team"], (cid, got["team"], want["team"], want["kind"])
        assert got["status"] == want["status"], (cid, got["status"], want["status"])
        assert got["reopened"] == want["reopened"], cid
        assert got["reports"] == len(want["reports"]), cid
        assert (got["closed_at"] is None) == (want["closed_at"] is None), cid
    for h in truth["hotspots"]:
        assert sum(1 for c in cases.values() if c["cell"] == h["cell"] and c["category"] == h["category"]) \
            == h["cases"]
    malformed = {k.split(".")[-1]: v for k, v in truth["counts"]["malformed"].items()}
    assert dead["raw_hotline"] == malformed["hotline"]
    assert dead["raw_patrol"] == malformed["patrol"]
    assert dead["raw_iot"] == malformed["iot"]
    assert dead["case_updates"] == malformed["case-updates"]
    assert unlocated == truth["counts"]["unlocated_tickets"]
