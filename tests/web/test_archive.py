"""The case page's history as read from ClickHouse (pipeline.web.archive): masking of what people wrote, with the
ids the system wrote kept readable."""

from __future__ import annotations

from typing import Any

from pipeline.web.archive import CaseArchive, mask_reason


class Transitions:
    """Rows as ClickHouse returns them for the timeline query (a fake: the SQL is tested against the server)."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        assert "case_transitions" in sql
        return [{"seq": i + 1, "status": "new", "team": "", "actor": "system", "at_epoch": 1764720000 + i,
                 "reason": r, "photo_url": ""} for i, r in enumerate(self.reasons)]


def test_an_event_id_in_a_reason_stays_whole_and_a_phone_number_beside_it_is_masked() -> None:
    # the web's report ids carry the date: "20261203" reads as a local phone number when masked as free text
    reasons = ["opened from patrol:WEB-20261203-cf47b2e7a05840f8",
               "opened from hotline:12345-20261203-62345678",
               "opened from iot:SMK-0042@1764720000.000",
               "returned: 居民 13812345678 说还在, see hotline:T-1"]
    timeline = CaseArchive(Transitions(reasons)).timeline("C1")
    got = [step["reason"] for step in timeline]
    assert got[:3] == reasons[:3]
    assert "13812345678" not in got[3] and got[3].startswith("returned: 居民 138") and got[3].endswith("hotline:T-1")


def test_mask_reason_masks_what_is_not_an_event_id() -> None:
    assert mask_reason("call 021-62345678 about patrol:P-1") == "call 021****5678 about patrol:P-1"
    assert mask_reason("") == ""
