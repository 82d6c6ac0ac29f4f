"""Callers' names and phone numbers never leave the worker in clear text."""

from __future__ import annotations

from pipeline.privacy import caller_hash, mask_text, redact_raw
from tests.pipeline.factories import hotline, raw


def test_mask_text_hides_phones_ids_and_names() -> None:
    text = "王小明 电话 139-1234-5678 或 021-65432100，身份证 31010919800101123X"
    out = mask_text(text, ("王小明",))
    for secret in ("王小明", "139-1234-5678", "65432100", "31010919800101123X"):
        assert secret not in out
    assert "电话" in out


def test_redact_raw_keeps_shape_but_not_personal_data() -> None:
    msg = hotline(description="王小明说13912345678打不通")
    out = redact_raw(raw(msg))
    assert "王小明" not in out and "13912345678" not in out
    assert '"service_code":"E0501"' in out and '"caller":' in out


def test_redact_raw_of_broken_json_masks_digit_runs() -> None:
    out = redact_raw(b'{"caller": {"phone": "13912345678", "name": "X"')
    assert "13912345678" not in out


def test_caller_hash_is_stable_and_keyed() -> None:
    assert caller_hash("139 1234 5678") == caller_hash("13912345678")
    assert caller_hash("13912345678", b"k1") != caller_hash("13912345678", b"k2")
    assert "13912345678" not in caller_hash("13912345678")
