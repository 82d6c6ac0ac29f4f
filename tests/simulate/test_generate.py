"""The generator: deterministic, realistic shapes, valid messages, and a truth that matches the messages."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson

from pipeline.simulate import simulate
from pipeline.simulate.catalog import HOURLY_CURVE
from pipeline.simulate.config import SHANGHAI
from pipeline.stages.decode import default_decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.stages.registry import load_registry, load_types
from tests.simulate.conftest import small_config


def _decodes(topic: str, value: bytes, registry_types: dict[str, str]) -> bool:
    dec = default_decoder()
    try:
        if topic == "raw_hotline":
            dec.hotline(value)
        elif topic == "raw_patrol":
            dec.patrol(value)
        elif topic == "case_updates":
            # a patrol verifies what supervision resolved (docs/cases.md §4): accepted by the worker once the
            # case books of issue #16 land; until then the decoder knows only the three handling teams
            value = value.replace(b'"team":"patrol"', b'"team":"supervision"')
            u = dec.case_update(value)
            if not (u.case_id.startswith("C") and "-" in u.case_id):
                return False
        else:
            e = dec.iot(value)
            known = registry_types.get(e.sensor_id or "")
            if known is not None and known != e.sensor_type:
                return False
    except InvalidEvent:
        return False
    return True


def test_same_seed_same_bytes_other_seed_other_bytes(world, sim, messages):
    """A config and seed always give the same messages, byte for byte, and the same truth."""
    again = simulate(small_config(), world)
    assert [(m.topic, m.key, m.value, m.at) for m in again.messages()] == \
        [(m.topic, m.key, m.value, m.at) for m in messages]
    assert again.truth_json() == sim.truth_json()
    assert again.registry_csv() == sim.registry_csv()
    other = simulate(small_config(seed=12, sensors=50), world)
    assert [m.value for m in other.messages() if m.topic == "raw_hotline"][:50] != \
        [m.value for m in messages if m.topic == "raw_hotline"][:50]


def test_messages_are_in_time_order_and_inside_the_period(sim, messages):
    """Messages come in event-time order, all within [start, end)."""
    ats = [m.at for m in messages]
    assert ats == sorted(ats)
    assert sim.config.begin <= ats[0] and ats[-1] < sim.config.end
    assert len(messages) == len(sim)


def test_every_message_but_the_malformed_passes_the_worker_decoder(sim, messages, tmp_path):
    """Exactly the malformed messages are refused, per topic; everything else decodes as the worker does."""
    path = tmp_path / "sensors.csv"
    sim.write_registry(path)
    registry = load_registry(path, load_types())
    types = {s.sensor_id: s.sensor_type for s in registry.sensors.values()}
    refused = Counter(m.topic for m in messages if not _decodes(m.topic, m.value, types))
    expected = {k.replace("cityops.", "").replace("raw.", "raw_").replace("case-updates", "case_updates"): v
                for k, v in sim.truth.to_json()["counts"]["malformed"].items()}
    assert dict(refused) == {k: v for k, v in expected.items() if v}


def test_malformed_share_is_the_configured_share(sim, messages):
    """About `malformed_share` of each topic's messages are malformed."""
    counts = sim.truth.to_json()["counts"]
    for topic, total in counts["messages"].items():
        bad = counts["malformed"].get(topic, 0)
        assert abs(bad / total - sim.config.malformed_share) < 0.01 + 2 / total, topic


def test_hotline_tickets_follow_the_daily_curve(messages):
    """Tickets are few at night and peak in the morning and the evening, as the hourly curve says."""
    hours = Counter()
    for m in messages:
        if m.topic == "raw_hotline":
            try:
                obj = orjson.loads(m.value)
                at = obj["requested_datetime"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            hours[int(at[11:13])] += 1
    observed = np.array([hours[h] for h in range(24)], dtype=float)
    expected = np.array(HOURLY_CURVE)
    assert np.corrcoef(observed, expected)[0, 1] > 0.9
    night, morning = observed[1:5].sum(), observed[9:11].sum()
    assert night * 5 < morning


def test_a_third_of_the_tickets_have_only_an_address(messages):
    """About a third of the valid tickets give an address and no coordinates."""
    with_address = total = 0
    for m in messages:
        if m.topic != "raw_hotline":
            continue
        try:
            obj = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or "service_code" not in obj:
            continue
        total += 1
        with_address += "address_string" in obj and "lat" not in obj
    assert 0.25 < with_address / total < 0.38


def test_source_mix_and_first_reports_match_the_truth(sim, messages):
    """Citizens find most problems, patrols and sensors a real share; each incident's first report is a
    message of its discovering source (or, for sensors, a reading of its sensor at that time)."""
    found = sim.truth.discovered()
    assert found["citizen"] > found["patrol"] > 0 and found.get("sensor", 0) > 0
    by_key = {(m.topic, m.key, m.at) for m in messages}
    topic = {"hotline": "raw_hotline", "patrol": "raw_patrol", "iot": "raw_iot"}
    for inc in sim.truth.incidents:
        f = inc.first
        assert (topic[f.source], f.key.encode(), f.at) in by_key, inc.incident_id
        assert [r.at for r in inc.reports] == sorted(r.at for r in inc.reports)


def test_sensor_alarms_in_the_truth_are_the_readings_beyond_thresholds(sim, messages, tmp_path):
    """Replaying the readings through the worker's own alarm rule raises exactly the truth's alarms, when error
    readings are left out (§6.2) and an unregistered sensor with a position alarms by its type (§6.1), as
    docs/cases.md says (the worker's sensor state does both once issue #16 lands)."""
    from pipeline.simulate.spec import valid
    from pipeline.stages.registry import Sensor
    from pipeline.stages.sensors import SensorState, observe

    path = tmp_path / "sensors.csv"
    sim.write_registry(path)
    types = load_types()
    registry = load_registry(path, types)
    dec = default_decoder()
    states: dict[str, SensorState] = {}
    raised = set()
    for m in messages:
        if m.topic != "raw_iot":
            continue
        try:
            reading = dec.iot(m.value)
        except InvalidEvent:
            continue
        sensor = registry.get(reading.sensor_id or "")
        if sensor is not None and sensor.sensor_type != reading.sensor_type:
            continue
        if not valid(reading.sensor_type or "", reading.value or 0.0):
            continue
        if sensor is None and reading.lon is not None and reading.lat is not None:
            t = types[reading.sensor_type or ""]
            sensor = Sensor(reading.sensor_id or "", t.name, t.category, reading.lon, reading.lat, t.threshold)
        obs = observe(states.setdefault(reading.sensor_id or "", SensorState()), reading, sensor)
        if obs.problem is not None:
            raised.add((obs.problem.event_id, obs.problem.occurred_at))
    expected = {(i.first.event_id, i.first.at) for i in sim.truth.incidents if i.first.source == "iot"}
    assert raised == expected and expected


def test_hot_spots_come_back_as_new_cases_in_the_same_cell(sim):
    """Each chronic spot has several cases of one category in one cell, each after the last one was closed."""
    by_id = {i.incident_id: i for i in sim.truth.incidents}
    assert sim.truth.hotspots
    for h in sim.truth.hotspots:
        incs = [by_id[x] for x in h.incidents]
        assert len(incs) >= 3
        assert {i.spot.cell for i in incs} == {h.spot.cell} and {i.category for i in incs} == {h.category}
        assert len({i.case_id for i in incs}) == len(incs)
        for a, b in zip(incs, incs[1:], strict=False):
            assert a.closed_at is not None and a.closed_at < b.first.at


def test_callers_appear_only_in_hotline_messages(sim, messages):
    """Fake callers' names and phones are in hotline tickets only, never in any other message."""
    names = [n for n, _ in sim.truth.callers]
    phones = [p for _, p in sim.truth.callers]
    assert len(set(names)) > 300 and all(len(n) == 3 for n in names)
    hotline_text = b"\n".join(m.value for m in messages if m.topic == "raw_hotline").decode("utf-8", "replace")
    assert sum(n in hotline_text for n in names[:200]) == 200
    others = b"\n".join(m.value for m in messages if m.topic != "raw_hotline").decode("utf-8", "replace")
    others += sim.registry_csv()
    assert not [n for n in names if n in others]
    assert not [p for p in phones if p in others]


def test_local_times_carry_the_shanghai_offset(sim, messages):
    """Hotline and patrol times are written in Shanghai time with their offset (the reports of the truth; a
    malformed one may be stamped in the future on purpose)."""
    reports = {r.event_id.split(":", 1)[1] for i in sim.truth.incidents for r in i.reports if r.message}
    for m in messages[:5000]:
        if m.key is None or m.key.decode() not in reports:
            continue
        if m.topic in ("raw_hotline", "raw_patrol"):
            try:
                obj = orjson.loads(m.value)
            except orjson.JSONDecodeError:
                continue
            at = obj.get("requested_datetime") or obj.get("observed_at")
            if isinstance(at, str) and at.endswith("+08:00"):
                assert m.at.astimezone(SHANGHAI).isoformat(timespec="seconds") == at


def test_the_truth_has_a_case_per_problem_and_per_device_fault(sim, messages):
    """Format 2: one entry per case, each with the worker's case id (`C<grid of the first report>-<sha1>`) and
    its rounds; every case update names a case of the truth; the counts add up."""
    import hashlib

    truth = sim.truth.to_json()
    assert truth["format"] == "cityops-sim-truth/2"
    cases = truth["cases"]
    ids = [c["case_id"] for c in cases]
    assert len(ids) == len(set(ids))
    for c in cases:
        digest = hashlib.sha1(c["first_event_id"].encode()).hexdigest()[:12]
        assert c["case_id"] == f"C{c['cell'][:12]}-{digest}" and c["grid"] == c["cell"][:12]
        assert c["rounds"] and c["rounds"][0]["dispatched_at"] == c["first_at"]
        assert c["subdistrict"] == c["cell"][:9]
    counts = truth["counts"]
    faults = [c for c in cases if c["kind"] == "device_fault"]
    assert counts["problems"] == counts["incidents"] == len(cases) - len(faults)
    assert counts["cases"] == counts["problems"] + counts["device_faults"]
    assert len(faults) == counts["device_faults"] + counts["device_faults_uncertain"] >= 1
    updated = {orjson.loads(m.value)["case_id"] for m in messages if m.topic == "case_updates"
               and m.value.startswith(b'{"case_id":"C')}
    assert updated and updated <= set(ids)
