"""Warnings for the operations centre: a refused ruleset or grid, growing dead letters, a lagging consumer,
a broken live feed or users file.

`ConfigWatch` watches the same rules and grid files the worker loads (CITYOPS_RULES, CITYOPS_GRID) with the
worker's own holders, so the web refuses exactly what the worker refuses and can say why. `alerts(...)` turns
the current readings into a list of `Alert`s, most severe first; it is a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.web.feed import LagReport
from pipeline.web.live import LiveBoard

Severity = Literal["critical", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Alert:
    key: str               # stable id: rules, grid, deadletters, lag, feed, users, archive
    severity: Severity
    title: str             # short bilingual label
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "severity": self.severity, "title": self.title, "detail": self.detail}


@dataclass(frozen=True)
class AlertPolicy:
    deadletters_per_5min: int = 10       # more than this in 5 minutes is a warning ...
    deadletters_critical: int = 100      # ... and this many critical
    lag_warning: int = 1000              # unprocessed input messages
    lag_critical: int = 20000


class ConfigWatch:
    """The rules and grid holders of the worker, run by the web only to see refusals (never to route)."""

    def __init__(self, rules_path: Path | None = None, grid_path: Path | None = None) -> None:
        from rules.engine import DEFAULT_RULES

        self.rules_path = rules_path or DEFAULT_RULES
        self.grid_path = grid_path
        self.rules: Any = None
        self.grid: Any = None
        self.rules_error: str | None = None
        self.grid_error: str | None = None
        self._load()

    def _load(self) -> None:
        from grid.index import GridHolder
        from rules.engine import RulesHolder

        if self.rules is None:
            try:
                self.rules = RulesHolder(self.rules_path)
                self.rules_error = None
            except Exception as err:  # RulesError, OSError, YAML errors: all mean "worker will not start"
                self.rules_error = f"{self.rules_path}: {err}"
        if self.grid is None:
            try:
                self.grid = GridHolder(self.grid_path)
                self.grid_error = None
            except Exception as err:  # GridFileError, ValueError (invalid grid), OSError
                self.grid_error = str(err)

    def check(self) -> None:
        """Re-read changed files (cheap when unchanged; blocking, run in a thread)."""
        self._load()
        if self.rules is not None:
            self.rules.maybe_reload()
            self.rules_error = self.rules.last_error
        if self.grid is not None:
            self.grid.maybe_reload()
            self.grid_error = self.grid.last_error

    @property
    def ruleset_version(self) -> str:
        return str(getattr(getattr(self.rules, "current", None), "version", ""))


def alerts(*, board: LiveBoard, lag: LagReport | None, config: ConfigWatch | None, feed_error: str | None,
           users_error: str | None = None, policy: AlertPolicy = AlertPolicy(), now: float | None = None,
           ) -> list[Alert]:
    out: list[Alert] = []
    if config is not None and config.rules_error:
        out.append(Alert("rules", "critical", "规则集被拒绝 Ruleset refused",
                         f"{config.rules_error} (the worker keeps the previous ruleset)"))
    if config is not None and config.grid_error:
        out.append(Alert("grid", "critical", "网格数据被拒绝 Grid refused",
                         f"{config.grid_error} (the worker keeps the previous grid)"))
    if feed_error:
        out.append(Alert("feed", "critical", "实时数据中断 Live feed down", feed_error))
    for case_id, failures in sorted(board.notify_failures.items()):
        case = board.cases.get(case_id, {})
        if case.get("status") == "closed":
            continue
        who = ", ".join(f"{f['target']} ({f['channel']})" for f in failures)
        out.append(Alert(f"notify:{case_id}", "critical", "一级案件通知失败 P1 notification failed",
                         f"case {case_id} ({case.get('category', '?')}): not delivered to {who}; "
                         f"{failures[-1]['reason']} (call them)"))
    recent = board.deadletters_recent(300, now)
    if recent > policy.deadletters_per_5min:
        severity: Severity = "critical" if recent >= policy.deadletters_critical else "warning"
        last = board.recent_deadletters[-1] if board.recent_deadletters else None
        why = f"; latest from {last[1]}: {last[2]}" if last else ""
        out.append(Alert("deadletters", severity, "死信增长 Dead letters growing",
                         f"{recent} messages dead-lettered in the last 5 minutes{why}"))
    if lag is not None:
        if lag.error:
            out.append(Alert("lag", "warning", "无法读取消费进度 Consumer lag unknown", lag.error))
        elif lag.total_lag > policy.lag_warning:
            worst = max(lag.sources.values(), key=lambda p: p.lag)
            severity = "critical" if lag.total_lag >= policy.lag_critical else "warning"
            out.append(Alert("lag", severity, "消费滞后 Consumer lagging",
                             f"{lag.total_lag} messages not yet processed; most on {worst.topic} ({worst.lag})"))
    if users_error:
        out.append(Alert("users", "warning", "用户文件被拒绝 Users file refused",
                         f"{users_error} (the previous users stay)"))
    if board.unlocated:
        out.append(Alert("unlocated", "info", "待人工定位 Tickets to place",
                         f"{len(board.unlocated)} hotline tickets could not be placed automatically"))
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda a: order[a.severity])
