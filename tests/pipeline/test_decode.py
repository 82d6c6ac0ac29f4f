"""The source adapters accept what CONTRACTS.md describes and give a precise reason for everything else."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stages.decode import Decoder, default_decoder
from pipeline.stages.fields import InvalidEvent
from tests.pipeline.factories import T0, hotline, patrol, raw, reading, update

NOW = T0 + timedelta(days=1)


@pytest.fixture
def decoder() -> Decoder:
    d = default_decoder()
    return Decoder(taxonomy=d.taxonomy, now=lambda: NOW)


def reason(fn, payload: bytes) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidEvent) as info:
        fn(payload)
    return info.value.reason


def test_hotline_ticket_is_normalized(decoder: Decoder) -> None:
    """A valid ticket becomes an Event with a stable id, UTC time and no personal data."""
    ev = decoder.hotline(raw(hotline("T-9", at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC).astimezone())))
    assert ev.event_id == "hotline:T-9"
    assert ev.source == "hotline" and ev.discovered_by == "citizen"
    assert ev.occurred_at == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert (ev.lon, ev.lat) == (121.4905, 31.2650)
    assert ev.caller_hash and "13912345678" not in repr(ev) and "王小明" not in repr(ev)


def test_hotline_with_only_an_address_is_valid(decoder: Decoder) -> None:
    ev = decoder.hotline(raw(hotline(lon=None, lat=None, address_string="虹口区四川北路1500号")))
    assert ev.lon is None and ev.address == "虹口区四川北路1500号"


def test_caller_name_in_description_is_masked(decoder: Decoder) -> None:
    ev = decoder.hotline(raw(hotline(description="我是王小明，电话13912345678，门口有摊贩")))
    assert "王小明" not in ev.description and "13912345678" not in ev.description
    assert "摊贩" in ev.description


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda m: m.pop("service_request_id"), "service_request_id: required field missing"),
    (lambda m: m.update(service_code="X9999"), "service_code: unknown category code 'X9999'"),
    (lambda m: m.update(service_code=5), "service_code: must be a string, got int"),
    (lambda m: m.update(requested_datetime="yesterday"), "requested_datetime: not an ISO 8601 time"),
    (lambda m: m.update(requested_datetime="2026-11-20T09:00:00"), "time has no UTC offset"),
    (lambda m: m.update(requested_datetime="1970-01-01T00:00:00Z"), "too far in the past"),
    (lambda m: m.update(requested_datetime="2099-01-01T00:00:00Z"), "is in the future"),
    (lambda m: m.update(lat=121.49, long=31.26), "latitude 121.49 out of range (lat/lon swapped?)"),
    (lambda m: m.pop("lat"), "lat/long: both or neither must be given"),
    (lambda m: (m.pop("lat"), m.pop("long")), "neither lat/long nor address_string"),
    (lambda m: m.update(description="x" * 4001), "description: too long (4001 characters, limit 4000)"),
    (lambda m: m.update(request_type="shout"), "request_type: 'shout' is not one of"),
    (lambda m: m.update(caller="13912345678"), "caller: must be an object"),
])
def test_hotline_rejections_name_the_field(decoder: Decoder, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    msg = hotline()
    mutate(msg)
    assert expected in reason(decoder.hotline, raw(msg))


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", "not valid UTF-8 JSON"),
    (b'{"lat": NaN}', "not valid UTF-8 JSON"),
    (b"[1, 2]", "not a JSON object but list"),
    (b"[" * 5000 + b"]" * 5000, "not valid UTF-8 JSON"),
    (b'{"a": "' + b"x" * 70000 + b'"}', "message too large"),
])
def test_malformed_bytes_are_rejected(decoder: Decoder, payload: bytes, expected: str) -> None:
    assert expected in reason(decoder.patrol, payload)


def test_patrol_requires_every_contract_field(decoder: Decoder) -> None:
    for field in ("report_id", "observed_at", "team", "inspector", "category", "lat", "lon"):
        msg = patrol()
        msg.pop(field)
        assert reason(decoder.patrol, raw(msg)).startswith(f"{field}: required")


def test_reading_values_must_be_finite_numbers(decoder: Decoder) -> None:
    assert "value: must be a number, got str" in reason(decoder.iot, raw(reading(value="high")))  # type: ignore[arg-type]
    assert "value: must be a number, got bool" in reason(decoder.iot, raw(reading(value=True)))
    too_big = orjson.dumps(reading(value=1.5)).replace(b"1.5", b"1e999")
    assert "number is infinity" in reason(decoder.iot, too_big)
    ev = decoder.iot(raw(reading("S-7", 12.5)))
    assert ev.sensor_id == "S-7" and ev.value == 12.5 and ev.event_id.startswith("iot:S-7@")


def test_case_update_validation(decoder: Decoder) -> None:
    u = decoder.case_update(raw(update("C310109009001-abc", "accept", "handling", note="on my way")))
    assert u.action == "accept" and u.team == "handling"
    assert "action: 'close' is not one of" in reason(decoder.case_update,
                                                      raw(update("C1-a", "close", "handling")))
    assert "team: 'police' is not one of" in reason(decoder.case_update, raw(update("C1-a", "accept", "police")))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["service_request_id", "requested_datetime", "service_code", "lat",
                                        "long", "address_string", "caller", "description", "x"]),
                       json_values, max_size=8))
def test_any_json_object_is_accepted_or_rejected_with_a_reason(obj: dict[str, object]) -> None:
    """No input crashes an adapter: it is an Event or an InvalidEvent with a non-empty reason."""
    decoder = default_decoder()
    for fn in (decoder.hotline, decoder.patrol, decoder.iot, decoder.case_update):
        try:
            fn(orjson.dumps(obj))
        except InvalidEvent as err:
            assert err.reason
        except Exception as err:  # pragma: no cover - this is the failure the test looks for
            pytest.fail(f"{fn.__name__} crashed on {obj!r}: {err!r}")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    decoder = default_decoder()
    for fn in (decoder.hotline, decoder.patrol, decoder.iot, decoder.case_update):
        try:
            fn(payload)
        except InvalidEvent as err:
            assert err.reason


def test_nan_coordinates_from_python_json_are_rejected(decoder: Decoder) -> None:
    msg = patrol()
    msg["lat"] = math.inf
    payload = raw({k: v for k, v in msg.items() if k != "lat"}).replace(b"}", b',"lat":Infinity}')
    assert "not valid UTF-8 JSON" in reason(decoder.patrol, payload)
