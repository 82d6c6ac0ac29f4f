"""The scenario catalogue (tests/scenarios/cases/*.yaml, written from docs/cases.md) through the real ingest
stage, case books and rules: every case, assignment, round, refusal and dead letter as the file expects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.analytics.lifecycle import ENGINES, Engine, engine_fixture
from tests.scenarios.catalogue import Scenario, load_all
from tests.scenarios.figures import actual, expected
from tests.scenarios.run import check, run

CATALOGUE = load_all()
WITH_REPORTS = [s for s in CATALOGUE if s.expect.reports is not None]


@pytest.mark.parametrize("scenario", CATALOGUE, ids=[s.name for s in CATALOGUE])
def test_scenario_runs_as_written(scenario: Scenario) -> None:
    problems = check(run(scenario))
    assert not problems, f"{scenario.name}: {scenario.title}\n  " + "\n  ".join(problems)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(request)


@pytest.mark.parametrize("scenario", WITH_REPORTS, ids=[s.name for s in WITH_REPORTS])
def test_scenario_reports_as_written(scenario: Scenario, engine: Engine) -> None:
    """The report figures the file names, from the real report SQL over the rows the scenario stored."""
    engine.write(run(scenario).batch())
    assert actual(engine.db, scenario) == expected(scenario), f"{scenario.name} on {engine.name}"
