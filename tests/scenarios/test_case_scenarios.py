"""The scenario catalogue (tests/scenarios/cases/*.yaml, written from docs/cases.md) through the real ingest
stage, case books and rules: every case, assignment, round, refusal and dead letter as the file expects."""

from __future__ import annotations

import pytest

from tests.scenarios.catalogue import Scenario, load_all
from tests.scenarios.run import check, run

CATALOGUE = load_all()


@pytest.mark.parametrize("scenario", CATALOGUE, ids=[s.name for s in CATALOGUE])
def test_scenario_runs_as_written(scenario: Scenario) -> None:
    problems = check(run(scenario))
    assert not problems, f"{scenario.name}: {scenario.title}\n  " + "\n  ".join(problems)
