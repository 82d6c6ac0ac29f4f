"""The personal-data scenarios of tests/scenarios/privacy.yaml, written from docs/cases.md §9, hold for mask_text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.model.privacy import mask_text

SCENARIOS = Path(__file__).with_name("privacy.yaml")
KEYS = {"text", "caller_name", "must_not_contain", "must_contain"}


def load(path: Path) -> list[dict[str, Any]]:
    """The scenarios of `path`; an unknown or missing key fails loudly, naming the scenario."""
    scenarios = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(scenarios, list) and scenarios, f"{path}: expected a list of scenarios"
    for n, scenario in enumerate(scenarios, 1):
        assert isinstance(scenario, dict), f"{path}: scenario {n} is not a mapping"
        unknown, missing = set(scenario) - KEYS, {"text", "must_not_contain", "must_contain"} - set(scenario)
        assert not unknown and not missing, f"{path}: scenario {n}: unknown keys {unknown}, missing {missing}"
    return scenarios


@pytest.mark.parametrize("scenario", [pytest.param(s, id=f"scenario-{n:02d}")
                                      for n, s in enumerate(load(SCENARIOS), 1)])
def test_masked_text_shows_what_it_must_and_nothing_it_must_not(scenario: dict[str, Any]) -> None:
    """A scenario's text, masked with its caller's name, contains none of must_not_contain and all of must_contain."""
    name = scenario.get("caller_name")
    out = mask_text(scenario["text"], (name,) if name else ())
    assert [s for s in scenario["must_not_contain"] if s in out] == [], out
    assert [s for s in scenario["must_contain"] if s not in out] == [], out
