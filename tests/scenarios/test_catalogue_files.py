"""The scenario files themselves: they load, their places are real Hongkou cells, their inputs use the real
vocabularies, their expectations are internally consistent, and every known defect has a scenario.

These tests check the catalogue, not the case books: the executor that runs the scenarios is separate.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from grid.datum import haversine_m
from grid.gazetteer import Gazetteer
from grid.index import GridIndex
from pipeline.model.taxonomy import default_taxonomy
from tests.scenarios.catalogue import (
    CASES_DIR,
    CatalogueError,
    Patrol,
    Reading,
    Scenario,
    Ticket,
    Update,
    WallTick,
    load,
    load_all,
)

SENSOR_TYPES = Path(__file__).resolve().parents[2] / "pipeline" / "data" / "sensor_types.yaml"

# The defects of issue #16, one sentence each, as each scenario's `defect:` quotes them; and the files that
# would fail on the old behaviour.
DEFECTS: dict[str, tuple[str, list[str]]] = {
    "button-merged-into-smoke-case": (
        "An elderly resident's emergency button 250 m from an open smoke-alarm case (both category E0499) was "
        "merged into it, no assignment, the 15-minute `elderly-emergency-call` rule never ran.",
        ["01_elderly_button_near_smoke_case"]),
    "second-resident-reopened-first": (
        "A second resident's button 120 m away two days after the first one's case closed reopened the first "
        "resident's case.",
        ["02_second_resident_after_first_closed"]),
    "two-bins-one-case": (
        "Two bins 80 m apart gave one case.",
        ["04_two_bins_80m", "05_patrol_case_adopted_by_bin_sensor"]),
    "consult-absorbed-patrol": (
        "A `consult` ticket opens a supervision case (reply only, 5 days); a patrol report of the same garbage "
        "33 m away an hour later joined it silently and never reached handling.",
        ["06_consult_then_patrol_reroutes"]),
    "vendor-one-case-reopened": (
        "A vendor reported at the same spot every day for 30 days (each day's case handled and verified) was 1 "
        "case reopened 29 times: `chronic-hotspot` never fired and the recurrence report missed it.",
        ["07_vendor_every_day_30_days"]),
    "rework-own-predecessor": (
        "A reopen by supervision (返工) in a cell with earlier cases counted the case as its own predecessor and "
        "went to supervision as `chronic-hotspot` instead of back to the squad that failed the fix.",
        ["08_rework_is_not_chronic"]),
    "stream-clock-escalation": (
        "An elderly call at 02:00, due 02:15, was escalated at 08:00 when a litter report moved that grid's "
        "clock (stream clock); if the next item of the grid is the late `resolve`, it was never escalated.",
        ["18_elderly_escalated_when_book_clock_moves", "19_late_resolve_escalates_first"]),
    "escalation-stamped-with-due": (
        "Escalations were stamped with the due time, not when they were made.",
        ["18_elderly_escalated_when_book_clock_moves", "19_late_resolve_escalates_first",
         "22_wall_elderly_escalation"]),
    "verification-never-escalated": (
        "A resolved but unverified case never escalated (verification had no deadline).",
        ["20_verification_overdue_escalates"]),
    "future-report-wall": (
        "In wall mode one report 1 h in the future made every grid escalate early.",
        ["21_wall_future_reports_dead_letters"]),
    "supervision-verifies-itself": (
        "Supervision verified its own work when it held a case, and its overdue cases escalated to itself.",
        ["23_supervision_case_verified_by_patrol", "24_escalation_once_per_round"]),
    "resolved-counted-overdue": (
        "`report sla`, `workload`, `health` treated a resolved case as open and overdue",
        ["25_resolved_case_not_overdue"]),
    "closed-on-time-wrong-deadline": (
        "\"closed on time\" compared supervision's verify time with the handler's due time",
        ["26_closed_on_time_uses_verify_due"]),
    "dispatched-always-on-time": (
        "\"dispatched on time\" was always 100 %",
        ["27_dispatched_on_time"]),
    "credited-to-last-team": (
        "teams were credited by the case's last team",
        ["28_rounds_credited_to_own_team"]),
    "due-restarted": (
        "the due time restarted on every reject or reopen.",
        ["29_due_time_never_restarts", "31_reopen_after_close_spot_check"]),
    "grafana-discovery-disagreed": (
        "Grafana's discovery rate disagreed with the report when an earlier report was processed later.",
        ["30_discovery_rate_earlier_report_later"]),
    "cross-grid-two-cases": (
        "A water-level alarm and a citizen's call 4.8 m and 10 minutes apart, in neighbouring management grids, "
        "gave 2 cases and 2 dispatches.",
        ["13_water_level_and_call_across_grids"]),
    "open-case-stopped-absorbing": (
        "An open, unfixed case stopped absorbing reports once its merge window passed (a manhole still "
        "`accepted` after 4 days got a second case and dispatch).",
        ["14_open_manhole_case_absorbs_after_4_days"]),
    "updates-before-creation": (
        "A `resolve` and `verify` stamped before the case was created were accepted.",
        ["15_updates_before_creation_refused"]),
    "error-value-alarms": (
        "a gateway's `-1` error value on `pipe_pressure` raised a priority-1 emergency after two readings, and "
        "cleared a smoke alarm",
        ["33_pipe_pressure_error_values", "34_smoke_error_value_does_not_clear"]),
    "stuck-silent-undetected": (
        "stuck/silent sensors never detected",
        ["35_stuck_dust_sensor", "36_silent_noise_sensor"]),
    "unregistered-button-ignored": (
        "an unregistered emergency button with a position in the message raised nothing",
        ["37_unregistered_button_with_position"]),
    "realarm-never": (
        "a manhole cover left at 20° for a week after its case closed raised one alarm in total.",
        ["38_manhole_realarm_after_close", "39_realarm_joins_open_case"]),
}

# The normal cases the brief asks for.
NORMAL_CASES = {
    "a plain ticket on time": "40_plain_ticket_on_time",
    "a multi-source incident": "41_multi_source_incident",
    "a reject and reroute": "42_reject_and_reroute",
    "a late close": "43_late_close",
    "an earlier report processed after a later one": "11_earlier_report_processed_later",
    "an address-only ticket": "44_address_tickets_match_by_cell",
}

HONGKOU = "310109"
_CELL = re.compile(r"\b(3101\d{11})\b")


@pytest.fixture(scope="module")
def scenarios() -> list[Scenario]:
    return load_all()


@pytest.fixture(scope="module")
def by_name(scenarios: list[Scenario]) -> dict[str, Scenario]:
    return {s.name: s for s in scenarios}


@pytest.fixture(scope="module")
def index() -> GridIndex:
    return GridIndex.load()


def _files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.yaml"))


# ---- the files load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_every_file_loads(path: Path) -> None:
    s = load(path)
    assert s.title and s.spec.startswith("docs/cases.md")
    assert s.steps and s.expect.cases


def test_catalogue_size_and_names(scenarios: list[Scenario]) -> None:
    assert 30 <= len(scenarios) <= 45
    for s in scenarios:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", s.name), s.name
    assert len({s.name[:2] for s in scenarios}) == len(scenarios), "two files share a number"


# ---- defects and normal cases are covered -----------------------------------------------------------------


def test_every_defect_has_a_scenario_that_quotes_it(by_name: dict[str, Scenario]) -> None:
    for key, (text, files) in DEFECTS.items():
        assert files, key
        for name in files:
            assert name in by_name, f"{key}: no scenario {name}"
            assert text in by_name[name].defects, f"{name} does not quote the defect {key!r}"


def test_every_quoted_defect_is_a_known_one(scenarios: list[Scenario]) -> None:
    known = {text: key for key, (text, _) in DEFECTS.items()}
    for s in scenarios:
        for d in s.defects:
            assert d in known, f"{s.name}: defect not in the list: {d!r}"
            assert s.name in DEFECTS[known[d]][1], f"{s.name} quotes {known[d]!r} but is not mapped to it"


def test_normal_cases_are_present(by_name: dict[str, Scenario]) -> None:
    for what, name in NORMAL_CASES.items():
        assert name in by_name, what
        assert by_name[name].normal, f"{name} ({what}) should be a normal case"


# ---- realistic inputs ---------------------------------------------------------------------------------------


def test_places_are_inside_hongkou_cells_named_in_their_notes(scenarios: list[Scenario], index: GridIndex) -> None:
    for s in scenarios:
        for place in s.places.values():
            where = f"{s.name}: place {place.name} ({place.lon}, {place.lat})"
            r = index.locate(place.lon, place.lat)
            assert r.cell is not None and r.error is None, where
            assert r.cell.startswith(HONGKOU), f"{where}: {r.cell} is not in Hongkou"
            assert not r.snapped, f"{where}: not inside a cell (snapped {r.cell})"
            named = _CELL.findall(place.note)
            if place.offset_from is None:
                assert named, f"{where}: a literal place's note names its cell"
            if named:
                assert named[0] == r.cell, f"{where}: the note names {named[0]}, the point is in {r.cell}"


def test_offsets_are_measured_in_metres(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        for p in s.places.values():
            if p.offset_from is None:
                continue
            base = s.places[p.offset_from]
            want = (p.east_m ** 2 + p.north_m ** 2) ** 0.5
            got = haversine_m(base.lon, base.lat, p.lon, p.lat)
            assert abs(got - want) < 0.05 + want * 1e-3, f"{s.name}: {p.name} is {got:.2f} m from {base.name}"


def test_categories_and_sensor_types_are_real(scenarios: list[Scenario]) -> None:
    taxonomy = default_taxonomy()
    types = yaml.safe_load(SENSOR_TYPES.read_text(encoding="utf-8"))["types"]
    for s in scenarios:
        for sensor in s.sensors.values():
            assert sensor.sensor_type in types, f"{s.name}: {sensor.sensor_id}: {sensor.sensor_type}"
        for step in s.steps:
            p = step.payload
            if isinstance(p, (Ticket, Patrol)):
                assert p.category in taxonomy, f"{s.name} step {step.index}: {p.category}"
            if isinstance(p, Reading):
                assert p.sensor_type in types, f"{s.name} step {step.index}: {p.sensor_type}"
        for c in s.expect.cases.values():
            if c.category is not None:
                assert c.category in taxonomy, f"{s.name}: case {c.label}: {c.category}"


def test_addresses_resolve_to_hongkou_cells(scenarios: list[Scenario], index: GridIndex) -> None:
    gazetteer = Gazetteer.load()
    for s in scenarios:
        for step in s.steps:
            p = step.payload
            if isinstance(p, Ticket) and p.address is not None:
                point = gazetteer.resolve(p.address)
                assert point is not None, f"{s.name} step {step.index}: {p.address} is not in the gazetteer"
                cell = index.locate(*point).cell
                assert cell is not None and cell.startswith(HONGKOU), f"{s.name} step {step.index}: {cell}"
                for c in s.expect.cases.values():
                    if c.step == step.index and c.cell is not None:
                        assert c.cell == cell, f"{s.name}: case {c.label} is in {c.cell}, {p.address} in {cell}"


def test_input_ids_are_unique(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        ids = [p.ticket_id if isinstance(p, Ticket) else p.report_id
               for p in (st.payload for st in s.steps) if isinstance(p, (Ticket, Patrol))]
        dup = [i for i, n in Counter(ids).items() if n > 1]
        assert not dup, f"{s.name}: duplicate ids {dup}"


def test_wall_steps_only_in_wall_scenarios(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        walls = [st for st in s.steps if isinstance(st.payload, WallTick)]
        if s.clock == "stream":
            assert not walls, s.name
        else:
            assert s.steps[0].kind == "wall", s.name
            assert [w.at for w in walls] == sorted(w.at for w in walls), f"{s.name}: the wall clock goes back"


# ---- the expectations hold together ---------------------------------------------------------------------------


def test_every_case_is_dispatched_first_and_named_by_a_report_step(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        first: dict[str, str] = {}
        for a in s.expect.assignments:
            first.setdefault(a.case, a.kind)
        for label, c in s.expect.cases.items():
            assert first.get(label) == "dispatch", f"{s.name}: case {label}'s first assignment is not a dispatch"
            assert s.step(c.step).is_report_input, f"{s.name}: case {label}: step {c.step}"
        for label, rounds in s.expect.rounds.items():
            assert rounds[0].kind in (None, "dispatch"), f"{s.name}: {label}: round 1 is a dispatch"


def test_assignments_are_in_the_order_made(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        times = [a.created_at for a in s.expect.assignments if a.created_at is not None]
        assert times == sorted(times), f"{s.name}: assignments are listed out of order"


def test_escalations_are_stamped_after_their_deadline(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        for a in s.expect.assignments:
            if a.kind == "escalation":
                assert a.created_at is not None and a.due_at is not None, s.name
                assert a.created_at > a.due_at, f"{s.name}: escalation of {a.case} not after its deadline"
                assert a.team in ("supervision", "command"), s.name
            else:
                assert a.team in ("enforcement", "handling", "supervision"), s.name


def test_case_times_are_ordered(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        for c in s.expect.cases.values():
            where = f"{s.name}: case {c.label}"
            if c.created_at and c.closed_at:
                assert c.closed_at >= c.created_at, where
            if c.created_at and c.resolved_at:
                assert c.resolved_at >= c.created_at, where
            if c.resolved_at and c.closed_at:
                assert c.closed_at >= c.resolved_at, where
            if c.status == "closed":
                assert c.closed_at is not None or "closed_at" not in c.checked, where
            if c.status in ("dispatched", "accepted"):
                assert c.closed_at is None and c.resolved_at is None, where
            if c.case_due_at and c.created_at:
                assert c.case_due_at > c.created_at, where


def test_recurrence_links_point_to_earlier_closed_cases(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        for c in s.expect.cases.values():
            if c.recurrence_of is None:
                continue
            prev = s.expect.cases[c.recurrence_of]
            assert c.recurrence_of != c.label, f"{s.name}: {c.label} is its own predecessor"
            if prev.closed_at and c.created_at:
                assert prev.closed_at <= c.created_at, f"{s.name}: {c.label} links a case closed after it"
            if "previous_closed_at" in c.checked and "closed_at" in prev.checked:
                assert c.previous_closed_at == prev.closed_at, f"{s.name}: {c.label}.previous_closed_at"


def test_updates_name_real_teams_and_refusals_are_listed(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        for st in s.steps:
            if isinstance(st.payload, Update):
                assert st.payload.team in ("enforcement", "handling", "supervision", "patrol"), s.name
        assert s.expect.refused is not None, f"{s.name}: list the refused updates ([] for none)"
        assert s.expect.dead_letters is not None, f"{s.name}: list the dead letters ([] for none)"


def test_report_figures_are_consistent(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        r = s.expect.reports
        if r is None:
            continue
        d = r.section("discovery")
        if d and {"total", "citizen", "patrol", "sensor"} <= d.keys():
            assert d["total"] == d["citizen"] + d["patrol"] + d["sensor"], s.name
        for team, f in (r.section("sla") or {}).items():
            where = f"{s.name}: sla.{team}"
            if {"resolved_on_time", "resolved"} <= f.keys():
                assert f["resolved_on_time"] <= f["resolved"], where
            if {"resolved", "rounds_due"} <= f.keys():
                assert f["resolved"] <= f["rounds_due"], where
            if {"accepted_on_time", "accepted"} <= f.keys():
                assert f["accepted_on_time"] <= f["accepted"], where
            if {"rounds", "rounds_due", "rejected", "superseded"} <= f.keys():
                assert f["rounds_due"] + f["rejected"] + f["superseded"] <= f["rounds"], where
        c = r.section("closing")
        if c and {"closed", "closed_on_time"} <= c.keys():
            assert c["closed_on_time"] <= c["closed"], s.name


# ---- the loader -----------------------------------------------------------------------------------------------

_MINIMAL = """\
title: t
spec: "docs/cases.md §2"
defect: normal
day: 2026-03-02
places:
  P: {lon: 121.4853987, lat: 31.2837119, note: "cell 310109017016004"}
  Q: {from: P, east: 100}
steps:
  - {at: "D2 01:30", ticket: {id: "T1", category: E0102, place: Q}}
  - {at: "D2 02:00", update: {case: A, action: accept, team: handling}}
expect:
  cases:
    A: {step: 1, created_at: "D2 01:30", resolved_at: null}
  assignments:
    - {case: A, kind: dispatch, team: handling, due_at: "D2 13:30"}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "99_probe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loader_resolves_times_places_and_labels(tmp_path: Path) -> None:
    s = load(_write(tmp_path, _MINIMAL))
    assert s.steps[0].at == datetime(2026, 3, 2, 17, 30, tzinfo=UTC)       # D2 01:30 Asia/Shanghai
    q = s.places["Q"]
    assert abs(haversine_m(s.places["P"].lon, s.places["P"].lat, q.lon, q.lat) - 100) < 0.05
    a = s.expect.cases["A"]
    assert a.checked == {"created_at", "resolved_at"} and a.resolved_at is None
    assert a.expected() == {"created_at": datetime(2026, 3, 2, 17, 30, tzinfo=UTC), "resolved_at": None}
    assert s.expect.assignments[0].due_at == datetime(2026, 3, 3, 5, 30, tzinfo=UTC)
    assert s.expect.refused is None and s.expect.reports is None


@pytest.mark.parametrize("change, message", [
    (("title: t", "title: t\ncolour: red"), "(top): unknown key 'colour'"),
    (("team: handling}}", "team: handling, when: now}}"), "steps[2].update: unknown key 'when'"),
    (("case: A, action", "case: Z, action"), "steps[2].update.case: unknown case label 'Z'"),
    (("step: 1,", "step: 2,"), "expect.cases.A.step: step 2 is not a report (a update step)"),
    (("step: 1,", "step: 7,"), "expect.cases.A.step: no step 7"),
    (("{case: A, kind: dispatch", "{case: B, kind: dispatch"), "expect.assignments[0].case: unknown case label"),
    (("kind: dispatch", "kind: dispatched"), "expect.assignments[0].kind"),
    (("place: Q}", "place: R}"), "steps[1].ticket.place: unknown place 'R'"),
    (("from: P", "from: Q"), "places.Q: 'from' makes a cycle"),
    (('"D2 01:30", ticket', '"25:00", ticket'), "steps[1].at: no such time"),
    (("resolved_at: null}", "resolved_at: null, mood: calm}"), "expect.cases.A: unknown key 'mood'"),
])
def test_loader_rejects_with_file_and_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in _MINIMAL
    with pytest.raises(CatalogueError) as err:
        load(_write(tmp_path, _MINIMAL.replace(old, new, 1)))
    assert str(err.value).startswith("99_probe.yaml: ")
    assert message in str(err.value)


def test_registered_sensor_readings_take_the_registry(tmp_path: Path) -> None:
    text = _MINIMAL.replace("steps:\n", "sensors:\n  EB-1: {type: elderly_button, place: P}\nsteps:\n"
                            "  - {at: \"01:00\", reading: {sensor: EB-1, value: 1}}\n"
                            "  - {at: \"01:01\", reading: {sensor: EB-2, type: elderly_button, value: 1}}\n")
    text = text.replace("step: 1,", "step: 3,").replace("update: {case: A", "update: {case: A")
    s = load(_write(tmp_path, text))
    r1, r2 = s.steps[0].payload, s.steps[1].payload
    assert isinstance(r1, Reading) and r1.registered and r1.place is s.places["P"]
    assert isinstance(r2, Reading) and not r2.registered and r2.place is None
    bad = text.replace("{sensor: EB-1, value: 1}", "{sensor: EB-1, value: 1, place: Q}")
    with pytest.raises(CatalogueError, match="EB-1 is registered"):
        load(_write(tmp_path, bad))
