"""The evaluation's indicators, each defined once: id (the CSV/JSON column), Chinese and English name, formula,
and how it is scored (pipeline.reports.evaluation computes them; README and `--help` print `help_text()`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Indicator:
    """One indicator: its id (CSV/JSON column), Chinese and English name, formula, and how it is scored."""

    id: str
    zh: str
    en: str
    formula: str
    scored: Literal["more", "less", "count", "no"] = "no"


def _ind(*items: Indicator) -> dict[str, Indicator]:
    return {i.id: i for i in items}


REGION = _ind(
    Indicator("received", "受理数", "reports received", "reports of problem cases made in the period"),
    Indicator("filed", "立案数", "cases filed",
              "problem cases created in the period, not being checked or voided by the check", "count"),
    Indicator("due", "应结案数", "cases due", "cases whose case_due_at falls in the period, closed or not"),
    Indicator("closed", "结案数", "cases closed", "of due: closed before as-of"),
    Indicator("close_rate", "结案率", "close rate", "closed / due", "more"),
    Indicator("closed_on_time", "按期结案数", "closed on time",
              "of due: resolved <= case_due_at and verified <= verify_due_at"),
    Indicator("closed_on_time_rate", "按期结案率", "on-time close rate", "closed_on_time / due", "more"),
    Indicator("overdue_unclosed", "超期未结案数", "overdue, not closed", "due - closed"),
    Indicator("reworked", "返工数", "reworked", "of due: sent back after a failed check or a rejection"),
    Indicator("rework_rate", "返工率", "rework rate", "reworked / due", "less"),
    Indicator("public_report_rate", "监督举报率", "public report rate",
              "filed first reported by the public / filed", "less"),
    Indicator("discovery_rate", "主动发现率", "discovery rate",
              "filed first found by a patrol or a sensor / filed", "more"),
)
DEPARTMENT = _ind(
    Indicator("dispatched", "派遣数", "rounds dispatched", "rounds dispatched to the team in the period", "count"),
    Indicator("due", "应处置数", "rounds due", "rounds held by the team whose due_at falls in the period"),
    Indicator("resolved", "处置数", "resolved", "of due: resolved before as-of"),
    Indicator("resolve_rate", "处置率", "resolve rate", "resolved / due", "more"),
    Indicator("resolved_on_time", "按期处置数", "resolved on time", "of due: resolved <= due_at"),
    Indicator("resolved_on_time_rate", "按期处置率", "on-time resolve rate", "resolved_on_time / due", "more"),
    Indicator("overdue_open", "超期待处置数", "overdue, unresolved", "due - resolved"),
    Indicator("reworked", "返工数", "reworked", "of due: the fix failed its check"),
    Indicator("rework_rate", "返工率", "rework rate", "reworked / due", "less"),
    Indicator("extended", "延期数", "extended", "of due: rounds whose deadline was extended"),
    Indicator("rejected", "退回数", "rejected", "rounds the team rejected in the period (never due)"),
)
VERIFIER = _ind(
    Indicator("verify_due", "应核查数", "checks due", "resolutions whose verify_due_at falls in the period"),
    Indicator("checked", "核查数", "checked", "of verify_due: verified or sent back before as-of"),
    Indicator("verify_rate", "核查率", "check rate", "checked / verify_due", "more"),
    Indicator("checked_on_time", "按时核查数", "checked on time", "of verify_due: checked <= verify_due_at"),
    Indicator("verified_on_time_rate", "按时核查率", "on-time check rate", "checked_on_time / verify_due", "more"),
)
PATROL = _ind(
    Indicator("area_filed", "辖区立案数", "cases in its area",
              "problem cases filed in the period in the team's grids and categories"),
    Indicator("patrol_found", "巡查发现数", "found by a patrol", "of area_filed: first found by a patrol"),
    Indicator("public_first", "公众首报数", "first reported by the public",
              "of area_filed: first reported by the public"),
    Indicator("miss_rate", "漏报率", "missed-report rate", "public_first / area_filed", "less"),
)
INSPECTOR = _ind(
    Indicator("reports", "上报数", "reports", "distinct patrol reports the inspector observed in the period"),
    Indicator("valid", "有效上报数", "valid reports", "of reports: opened a case or joined one"),
    Indicator("refused", "作废数", "refused", "of reports: refused at ingest and never applied"),
    Indicator("duplicates", "重复数", "sent again", "of reports: the same report id sent again (counted once)"),
    Indicator("valid_rate", "有效上报率", "valid-report rate", "valid / reports", "more"),
)
CHECKER = _ind(
    Indicator("check_due", "应核实数", "checks due", "checks before filing whose deadline falls in the period"),
    Indicator("check_done", "核实数", "checked", "of check_due: confirmed or voided before as-of"),
    Indicator("check_void", "作废数", "voided", "of check_due: voided (not a problem, never filed)"),
    Indicator("check_in_time", "按时核实数", "checked in time", "of check_due: answered <= the check deadline"),
    Indicator("check_in_time_rate", "按时核实率", "on-time check-before-filing rate", "check_in_time / check_due",
              "more"),
)
INDICATORS: dict[str, dict[str, Indicator]] = {"region": REGION, "department": DEPARTMENT,
                                               "position.verifier": VERIFIER, "position.patrol": PATROL,
                                               "position.inspector": INSPECTOR, "position.checker": CHECKER}


def help_text() -> str:
    """The indicator table of `--help` and the README: id, Chinese, English, formula."""
    lines = []
    titles = {"region": "region (district | subdistrict | grid)", "department": "department (team)",
              "position.verifier": "position: verifier (supervision; patrol for supervision's own fixes)",
              "position.patrol": "position: patrol team (its grids and categories: --patrols FILE)",
              "position.inspector": "position: patrol inspector (监督员: their patrol reports)",
              "position.checker": "position: checker (核实: the patrol checking public reports before filing)"}
    for of, defs in INDICATORS.items():
        lines.append(f"{titles[of]}:")
        for i in defs.values():
            lines.append(f"  {i.zh} {i.id} ({i.en}) = {i.formula}")
    return "\n".join(lines)
