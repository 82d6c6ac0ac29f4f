"""Issue #10.5, in process: hostile messages of every input topic through the worker's own ingest stage.

Hypothesis draws batches of hostile messages (tests.fuzz) — at least 10,000 per topic — and each batch goes
through `Ingest` exactly as the worker's agents call it. Every message must come out as exactly one dead letter
with a non-empty reason; nothing is located, stored or raised. A second property throws arbitrary bytes and
arbitrary JSON at the same stage: whatever comes in is accounted for exactly once, and nothing raises.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.stages.decode import default_decoder
from pipeline.stages.ingest import Ingest, IngestResult
from pipeline.stages.registry import load_registry, load_types
from pipeline.stages.sensors import SensorState
from pipeline.wire import Message
from tests import fuzz

PER_TOPIC = 10_000
BATCH = 50
TOPIC = {"hotline": "t.raw.hotline", "patrol": "t.raw.patrol", "iot": "t.raw.iot", "case_updates": "t.updates"}


class PointGrid:
    """Every finite point is in one cell (the real grid's answers are not what is tested here)."""

    version = "fuzz-grid"

    def locate_batch(self, lons: np.ndarray, lats: np.ndarray) -> object:
        n = len(lons)

        class Result:
            cell = ["310109009001001"] * n
            subdistrict = ["310109009"] * n
            grid_kind = ["street"] * n
            snapped = [False] * n
            error = ["" if np.isfinite(lons[i]) and np.isfinite(lats[i]) else "not a finite point"
                     for i in range(n)]
        return Result()


class NoGazetteer:
    def resolve(self, address: str) -> tuple[float, float] | None:
        return None


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Ingest:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "sensors.csv"
    path.write_text(fuzz.SENSOR_REGISTRY_CSV, encoding="utf-8")
    return Ingest(decoder=default_decoder(), grid=PointGrid(), gazetteer=NoGazetteer(),
                  sensors=load_registry(path, load_types()))


def _stage(ingest: Ingest, feed: fuzz.Feed, raws: list[bytes]) -> IngestResult:
    msgs = [Message(TOPIC[feed], 0, i, raw, None) for i, raw in enumerate(raws)]
    if feed == "iot":
        res = ingest.readings(msgs, {})
    elif feed == "case_updates":
        res = ingest.updates(msgs)
    else:
        res = ingest.reports(feed, msgs)
    for d in res.deadletters:
        d.to_json()          # what the worker sends: building it is part of handling the message
    return res


def run(ingest: Ingest, feed: fuzz.Feed, batch: list[tuple[str, bytes]]) -> IngestResult:
    """The batch through the stage; when the stage raises, fail naming the one message that makes it raise
    (shrinking a 50-message batch would take minutes)."""
    try:
        return _stage(ingest, feed, [raw for _, raw in batch])
    except Exception:
        for kind, raw in batch:
            try:
                _stage(ingest, feed, [raw])
            except Exception as err:
                pytest.fail(f"{feed}: a {kind!r} message makes ingest raise {type(err).__name__}: {err}; "
                            f"message: {raw[:300]!r}... ({len(raw)} bytes)")
        raise


@pytest.mark.parametrize("feed", fuzz.FEEDS)
def test_every_hostile_message_becomes_one_dead_letter_with_a_reason(ingest: Ingest, feed: fuzz.Feed) -> None:
    """10,000+ hostile messages per topic: each is one dead letter (its own offset, a reason), nothing else."""
    seen: Counter[str] = Counter()

    @settings(max_examples=PER_TOPIC // BATCH, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(fuzz.strategy(feed), min_size=BATCH, max_size=BATCH))
    def prop(batch: list[tuple[str, bytes]]) -> None:
        res = run(ingest, feed, batch)
        seen.update(kind for kind, _ in batch)
        assert not res.located and not res.unlocated and not res.readings and res.accepted == 0, \
            [batch[i] for i in range(len(batch)) if i not in {d.offset for d in res.deadletters}][:2]
        assert sorted(d.offset for d in res.deadletters) == list(range(len(batch)))
        for d in res.deadletters:
            assert d.reason.strip(), batch[d.offset]
            out = orjson.loads(d.to_json())        # the dead letter itself is valid JSON with the reason
            assert out["reason"] == d.reason and out["offset"] == d.offset

    prop()
    assert sum(seen.values()) >= PER_TOPIC
    assert set(seen) == set(fuzz.KINDS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=20)
FIELDS = ["service_request_id", "requested_datetime", "service_code", "lat", "long", "address_string",
          "report_id", "observed_at", "team", "inspector", "category", "lon", "sensor_id", "sensor_type", "value",
          "measured_at", "case_id", "action", "actor", "at", "caller", "note", "description"]
anything = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=12).map(orjson.dumps),
)


@pytest.mark.parametrize("feed", fuzz.FEEDS)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(anything, min_size=1, max_size=30))
def test_arbitrary_input_is_accounted_for_exactly_once(ingest: Ingest, feed: fuzz.Feed, batch: list[bytes]) -> None:
    """Whatever the bytes, each message is a located report, an unlocated ticket, an accepted reading or a
    dead letter — exactly one of them — and the stage never raises."""
    states: dict[str, SensorState] = {}
    msgs = [Message(TOPIC[feed], 0, i, raw, None) for i, raw in enumerate(batch)]
    if feed == "iot":
        res = ingest.readings(msgs, states)
        accepted = res.accepted
        assert len(res.located) <= accepted         # problems are extra outputs of accepted readings
    elif feed == "case_updates":
        res = ingest.updates(msgs)
        accepted = len(res.located)
    else:
        res = ingest.reports(feed, msgs)
        accepted = len(res.located) + len(res.unlocated)
    assert accepted + len(res.deadletters) == len(batch)
    assert len({d.offset for d in res.deadletters}) == len(res.deadletters)
    assert all(d.reason.strip() for d in res.deadletters)
