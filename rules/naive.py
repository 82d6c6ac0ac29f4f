"""The obvious way to run a rules file, kept as the benchmark's baseline and as a second opinion in tests.

It walks the YAML as loaded (plain dicts and lists) for every event, rule by rule, interpreting each condition
from its text as it goes: no index, no compilation. It assumes a file that `load_ruleset` accepts (it does no
validation of its own) and must reach the same decisions as the compiled engine.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from pipeline.model.events import DEVICE_FAULTS, Event
from rules.durations import parse_duration
from rules.engine import Dispatch
from rules.limits import DEFAULT_TIME_LIMITS, PriorityLimits, TimeLimits
from rules.recurrence import RecurrenceCounter

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_BY = {"citizen": "hotline", "patrol": "patrol", "sensor": "iot"}


class NaiveRuleset:
    """Interprets the raw YAML of a ruleset per event."""

    def __init__(self, path: Path) -> None:
        self.doc: dict[str, Any] = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        self.version = str(self.doc["version"])
        self.time_limits = _time_limits(self.doc.get("time_limits") or {})

    def dispatch_batch(
        self,
        events: list[Event],
        recurrence: RecurrenceCounter | None = None,
    ) -> list[Dispatch]:
        return [self.dispatch(ev, recurrence) for ev in events]

    def decide(self, ev: Event, rec: RecurrenceCounter | None = None) -> Dispatch:
        """What a case book asks a router (pipeline.stages.lifecycle.Router): here simply the full dispatch."""
        return self.dispatch(ev, rec)

    def dispatch(self, ev: Event, rec: RecurrenceCounter | None = None) -> Dispatch:
        rules = sorted(
            (r for r in self.doc.get("rules") or [] if r.get("enabled", True)), key=lambda r: r["order"]
        )
        for rule in rules:
            when = rule.get("when") or {}
            if ("fault" in when) is not (ev.fault is not None):
                continue  # device faults go only to rules naming `fault`, and those take nothing else
            if self._match(when, ev, rec):
                return self._route(rule["then"], rule["id"], ev)
        return self._route(self.doc["default"], "default", ev)

    def _route(self, then: dict[str, Any], rule_id: str, ev: Event) -> Dispatch:
        team = then["team"]
        defaults = self.doc["teams"][team]
        sla = parse_duration(str(then.get("sla", defaults["sla"])))
        escalate = then["escalate_to"] if "escalate_to" in then else defaults.get("escalate_to")
        notify = list(defaults.get("notify") or [])
        notify += [n for n in _as_list(then.get("notify")) if n not in notify]
        return Dispatch(
            team=team,
            priority=int(then.get("priority", defaults.get("priority", 3))),
            sla=sla,
            due_at=ev.occurred_at + sla,
            escalate_to=escalate,
            notify=tuple(notify),
            tags=tuple(_as_list(then.get("tags"))),
            rule_id=rule_id,
            reason=f"rule {rule_id}",
            ruleset_version=self.version,
        )

    def _match(self, when: dict[str, Any], ev: Event, rec: RecurrenceCounter | None) -> bool:
        return all(self._condition(key, value, ev, rec) for key, value in when.items())

    def _condition(self, key: str, value: Any, ev: Event, rec: RecurrenceCounter | None) -> bool:
        loc = ev.location
        if key == "all":
            return all(self._match(part, ev, rec) for part in value)
        if key == "any":
            return any(self._match(part, ev, rec) for part in value)
        if key == "not":
            return not self._match(value, ev, rec)
        if key == "source":
            return ev.source in _as_list(value)
        if key == "discovered_by":
            return ev.source in [_BY[v] for v in _as_list(value)]
        if key == "category":
            return any(_code_matches(ev.category, p) for p in _as_list(value))
        if key == "cell":
            return (
                loc is not None
                and loc.cell is not None
                and any(_code_matches(loc.cell, p) for p in _as_list(value))
            )
        if key == "subdistrict":
            return loc is not None and loc.subdistrict in _as_list(value)
        if key == "grid_kind":
            return loc is not None and loc.grid_kind in _as_list(value)
        if key == "located":
            return (loc is not None and loc.cell is not None) == bool(value)
        if key == "request_type":
            return ev.request_type in _as_list(value)
        if key == "sensor_type":
            return ev.sensor_type in _as_list(value)
        if key == "fault":
            return ev.fault in (DEVICE_FAULTS if _as_list(value) == ["any"] else _as_list(value))
        if key == "keywords":
            text = ev.description.lower()
            return any(str(w).lower() in text for w in _as_list(value))
        if key == "regex":
            return re.search(value, ev.description, re.IGNORECASE) is not None
        if key == "value":
            return ev.value is not None and all(_compare(ev.value, str(c), "==") for c in _as_list(value))
        if key == "time":
            local = self._local(ev.occurred_at)
            minute = local.hour * 60 + local.minute
            return any(_in_window(minute, w) for w in _as_list(value))
        if key == "weekday":
            day = self._local(ev.occurred_at).weekday()
            return any(day in _days(str(v)) for v in _as_list(value))
        if key == "recurrence":
            if rec is None or loc is None or loc.cell is None:
                return False
            pattern = value.get("category", "same")
            if pattern == "same":
                pattern = ev.category
            elif pattern == "same-class":
                pattern = ev.category[:3] + "*"
            found = rec.count(loc.cell, pattern, parse_duration(value["within"]), ev.occurred_at)
            return _compare(found, str(value["count"]), ">=")
        raise ValueError(f"unknown condition {key!r}")

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at.astimezone(ZoneInfo(self.doc.get("timezone", "Asia/Shanghai")))


def _time_limits(block: dict[str, Any]) -> TimeLimits:
    """The file's time limits, each key absent taking the shipped one (as rules.limits reads them)."""
    base = DEFAULT_TIME_LIMITS

    def per_priority(key: str, default: PriorityLimits) -> PriorityLimits:
        given = block.get(key)
        return default if given is None else tuple(sorted((int(p), parse_duration(str(t))) for p, t in given.items()))

    dispatch = parse_duration(str(block["dispatch"])) if "dispatch" in block else base.dispatch
    return TimeLimits(dispatch, per_priority("accept", base.accept_by_priority),
                      per_priority("verify", base.verify_by_priority))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [str(v) if not isinstance(v, bool) else v for v in (value if isinstance(value, list) else [value])]


def _code_matches(code: str, pattern: str) -> bool:
    return code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern


def _compare(actual: float, text: str, default_op: str) -> bool:
    m = re.match(r"^(>=|<=|==|!=|>|<)?\s*(-?\d+(?:\.\d+)?)$", text.strip())
    if m is None:
        raise ValueError(f"bad comparison {text!r}")
    op, bound = m.group(1) or default_op, float(m.group(2))
    return {
        ">=": actual >= bound,
        ">": actual > bound,
        "<=": actual <= bound,
        "<": actual < bound,
        "==": actual == bound,
        "!=": actual != bound,
    }[op]


def _in_window(minute: int, text: str) -> bool:
    start_text, end_text = (part.strip() for part in text.split("-"))
    h1, m1 = (int(x) for x in start_text.split(":"))
    h2, m2 = (int(x) for x in end_text.split(":"))
    start, end = h1 * 60 + m1, h2 * 60 + m2
    return start <= minute < end if start < end else (minute >= start or minute < end)


def _days(text: str) -> set[int]:
    text = text.lower()
    if text == "weekend":
        return {5, 6}
    if text in ("workday", "weekdays"):
        return {0, 1, 2, 3, 4}
    if "-" in text:
        a, b = (_DAYS.index(p.strip()) for p in text.split("-"))
        return {d % 7 for d in range(a, a + (b - a) % 7 + 1)}
    return {_DAYS.index(text)}


__all__ = ["NaiveRuleset"]
