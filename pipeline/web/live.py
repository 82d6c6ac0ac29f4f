"""`LiveBoard`: the latest state of every case, in memory, and the views the pages show.

It is fed by `pipeline.web.feed` (the case-state, assignments, unlocated and dead-letter topics) and never talks
to Kafka itself, so every view is testable with plain dicts. Each change bumps `version` and calls the
listeners (the SSE streams), which then recompute the views they show.

Definitions used everywhere (pages, metrics, tests):
- *open*: status `dispatched` or `accepted` (pipeline.stages.cases.OPEN_STATES);
- *overdue*: open and `due_at` before now (wall clock);
- *due soon*: open, not overdue, and `due_at` within `due_soon` of now;
- *health* of a cell (0-100, 网格健康画像), from its known cases:
  `100 - 8*open - 12*overdue - 10*recurrent - 10*(1 - discovery rate)`, clamped to 0..100, where
  `recurrent` = reopenings + (cases beyond the first of the same category in the cell), and the discovery rate
  is the share of cases first found by patrols or sensors (no cases: 100).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.model.cases import OPEN_STATES
from pipeline.model.events import TEAMS
from pipeline.model.privacy import mask_text

Json = dict[str, Any]
HANDLED = frozenset({"resolved", "verified", "closed"})
MAX_DISPATCHES_PER_CASE = 20
MAX_UNLOCATED = 5000


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time from a wire message, as an aware UTC datetime (None when absent or malformed)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def health_score(open_: int, overdue: int, recurrent: int, cases: int, proactive: int) -> float:
    """The cell health formula of the module docstring."""
    if cases == 0:
        return 100.0
    discovery = proactive / cases
    score = 100.0 - 8 * open_ - 12 * overdue - 10 * recurrent - 10 * (1.0 - discovery)
    return max(0.0, min(100.0, round(score, 1)))


@dataclass
class Queue:
    """Counts of one team or sub-district."""

    open: int = 0
    overdue: int = 0
    due_soon: int = 0

    def to_json(self) -> Json:
        return {"open": self.open, "overdue": self.overdue, "due_soon": self.due_soon}


@dataclass
class CellStats:
    open: int = 0
    overdue: int = 0
    cases: int = 0
    proactive: int = 0
    reopened: int = 0
    categories: Counter[str] = field(default_factory=Counter)

    @property
    def recurrent(self) -> int:
        return self.reopened + sum(n - 1 for n in self.categories.values() if n > 1)

    @property
    def health(self) -> float:
        return health_score(self.open, self.overdue, self.recurrent, self.cases, self.proactive)


class LiveBoard:
    """Case states, dispatches, unlocated tickets and dead-letter counts, with the views derived from them.

    Not thread-safe by design: the feed hands messages to the event loop, which is the only writer.
    """

    def __init__(self, subdistrict_names: dict[str, str] | None = None,
                 due_soon: timedelta = timedelta(hours=2), keep_closed: timedelta = timedelta(days=7),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.subdistrict_names = dict(subdistrict_names or {})
        self.due_soon = due_soon
        self.keep_closed = keep_closed
        self.clock = clock
        self.cases: dict[str, Json] = {}
        self.dispatches: dict[str, list[Json]] = {}
        self.unlocated: dict[str, Json] = {}
        self.deadletters_total: Counter[str] = Counter()      # source topic -> count seen
        self.recent_deadletters: deque[tuple[float, str, str]] = deque(maxlen=500)  # (epoch, topic, reason)
        self.dispatch_latencies: deque[float] = deque(maxlen=2000)
        # priority-1 cases whose notification was given up (the notifier's dead letters): case id -> failures
        self.notify_failures: dict[str, list[Json]] = {}
        self.version = 0
        self._listeners: list[Callable[[int], None]] = []
        self._cell_stats: tuple[tuple[int, int], dict[str, CellStats]] | None = None

    # -- feeding -------------------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call `listener(version)` after each change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener(self.version)

    def apply_batch(self, items: Iterable[tuple[str, Json | None, float]]) -> int:
        """Apply (kind, message, kafka timestamp) items; one notification for the whole batch.

        kind is `case-state`, `assignment`, `unlocated`, `deadletter` or `placed` (a ticket an operator placed;
        message `{"event_id": ...}`). A None case-state message is a tombstone (the case was deleted).
        Returns how many items changed something.
        """
        changed = 0
        for kind, msg, ts in items:
            changed += self._apply(kind, msg, ts)
        if changed:
            self._prune()
            self._changed()
        return changed

    def _apply(self, kind: str, msg: Json | None, ts: float) -> int:
        if kind == "case-state":
            return self._case_state(msg)
        if msg is None:
            return 0
        if kind == "assignment":
            return self._assignment(msg, ts)
        if kind == "unlocated":
            event_id = msg.get("event_id")
            if not isinstance(event_id, str) or event_id in self.unlocated or len(self.unlocated) >= MAX_UNLOCATED:
                return 0
            self.unlocated[event_id] = msg
            return 1
        if kind == "placed":
            return 1 if self.unlocated.pop(str(msg.get("event_id")), None) is not None else 0
        if kind == "deadletter":
            topic = str(msg.get("source_topic", "?"))
            self.deadletters_total[topic] += 1
            self.recent_deadletters.append((ts, topic, mask_text(str(msg.get("reason", "")))[:300]))
            self._notification_failed(msg)
            return 1
        return 0

    def _case_state(self, msg: Json | None) -> int:
        if msg is None:
            return 0
        case_id = msg.get("case_id")
        if not isinstance(case_id, str):
            return 0
        old = self.cases.get(case_id)
        if old is not None and int(old.get("revision", 0)) > int(msg.get("revision", 0)):
            return 0        # an older state arriving late (another partition's replay): the newer one stays
        self.cases[case_id] = msg
        return 1

    def _assignment(self, msg: Json, ts: float) -> int:
        case_id = msg.get("case_id")
        if not isinstance(case_id, str):
            return 0
        history = self.dispatches.setdefault(case_id, [])
        if any(a.get("assignment_id") == msg.get("assignment_id") for a in history):
            return 0
        history.append(msg)
        del history[:-MAX_DISPATCHES_PER_CASE]
        created = parse_time(msg.get("created_at"))
        if msg.get("kind", "dispatch") == "dispatch" and created is not None and ts > 0:
            self.dispatch_latencies.append(max(0.0, ts - created.timestamp()))
        return 1

    def _notification_failed(self, msg: Json) -> None:
        """A notifier dead letter (`kind: notification`) of a priority-1 case flags the case on the board."""
        if msg.get("kind") != "notification" or msg.get("priority") != 1 or not isinstance(msg.get("case_id"), str):
            return
        failures = self.notify_failures.setdefault(str(msg["case_id"]), [])
        if any(f["delivery_id"] == msg.get("delivery_id") for f in failures):
            return
        failures.append({"delivery_id": msg.get("delivery_id"), "target": str(msg.get("target", "")),
                         "channel": str(msg.get("channel", "")), "at": msg.get("at"),
                         "reason": mask_text(str(msg.get("reason", "")))[:300]})

    def _prune(self) -> None:
        """Forget cases closed longer ago than `keep_closed` (the worker keeps them; the live view need not)."""
        horizon = self.clock() - self.keep_closed
        old = [cid for cid, c in self.cases.items()
               if c.get("status") == "closed" and (parse_time(c.get("closed_at")) or horizon) < horizon]
        for cid in old:
            del self.cases[cid]
            self.dispatches.pop(cid, None)
            self.notify_failures.pop(cid, None)

    # -- views ---------------------------------------------------------------------------------------------

    def is_open(self, case: Json) -> bool:
        return case.get("status") in OPEN_STATES

    def due_class(self, case: Json, now: datetime) -> str:
        """`overdue`, `due_soon` or `` for an open case; `` for any other."""
        if not self.is_open(case):
            return ""
        due = parse_time(case.get("due_at"))
        if due is None:
            return ""
        if due < now:
            return "overdue"
        return "due_soon" if due < now + self.due_soon else ""

    def queues(self) -> Json:
        """Open / overdue / due-soon counts per team and per sub-district (every team listed, even at 0)."""
        now = self.clock()
        teams: dict[str, Queue] = {t: Queue() for t in TEAMS}
        subs: dict[str, Queue] = {code: Queue() for code in self.subdistrict_names}
        for case in self.cases.values():
            if not self.is_open(case):
                continue
            due = self.due_class(case, now)
            for q in (teams.setdefault(str(case.get("team", "")), Queue()),
                      subs.setdefault(str(case.get("subdistrict") or ""), Queue())):
                q.open += 1
                q.overdue += due == "overdue"
                q.due_soon += due == "due_soon"
        return {
            "teams": {t: q.to_json() for t, q in teams.items()},
            "subdistricts": [{"code": code, "name": self.subdistrict_names.get(code, code or "(outside)"),
                              **q.to_json()} for code, q in sorted(subs.items())],
            "total": Queue(sum(q.open for q in teams.values()), sum(q.overdue for q in teams.values()),
                           sum(q.due_soon for q in teams.values())).to_json(),
        }

    def cell_stats(self) -> dict[str, CellStats]:
        """Per cell (computed once per board version and second: the board view asks twice)."""
        now = self.clock()
        stamp = (self.version, int(now.timestamp()))
        if self._cell_stats is not None and self._cell_stats[0] == stamp:
            return self._cell_stats[1]
        stats: dict[str, CellStats] = {}
        for case in self.cases.values():
            cell = case.get("cell")
            if not cell:
                continue
            s = stats.setdefault(str(cell), CellStats())
            s.cases += 1
            s.proactive += case.get("discovered_by") in ("patrol", "sensor")
            s.reopened += int(case.get("reopened") or 0)
            s.categories[str(case.get("category"))] += 1
            if self.is_open(case):
                s.open += 1
                s.overdue += self.due_class(case, now) == "overdue"
        self._cell_stats = (stamp, stats)
        return stats

    def cells(self) -> Json:
        """Per cell with any case: open, overdue, cases and health (cells absent here have health 100)."""
        return {cell: {"open": s.open, "overdue": s.overdue, "cases": s.cases, "health": s.health}
                for cell, s in self.cell_stats().items()}

    def hotspots(self, n: int = 10) -> list[Json]:
        """The cells with the most open cases (then overdue, then lowest health), at least 2 open or 1 overdue."""
        ranked = sorted(((cell, s) for cell, s in self.cell_stats().items() if s.open >= 2 or s.overdue),
                        key=lambda cs: (-cs[1].open, -cs[1].overdue, cs[1].health, cs[0]))
        return [{"cell": cell, "open": s.open, "overdue": s.overdue, "health": s.health,
                 "subdistrict": self.subdistrict_names.get(cell[:9], cell[:9])} for cell, s in ranked[:n]]

    def summary(self, case: Json) -> Json:
        """What a list row shows of a case (no personal data exists in case states)."""
        return {k: case.get(k) for k in ("case_id", "category", "team", "status", "priority", "due_at",
                                         "created_at", "cell", "subdistrict", "lon", "lat", "sources",
                                         "reports", "escalated", "rule_id", "reopened", "discovered_by")} | {
            "due": self.due_class(case, self.clock()),
            "subdistrict_name": self.subdistrict_names.get(str(case.get("subdistrict") or ""), ""),
            "notify_failed": [f"{f['target']}/{f['channel']}" for f in self.notify_failures.get(
                str(case.get("case_id")), ())],
        }

    def urgency_key(self, case: Json) -> tuple[int, int, int, float]:
        """Sort key: open before handled, overdue first, then due soon, then priority (1 = most urgent),
        then newest first."""
        due = self.due_class(case, self.clock())
        created = parse_time(case.get("created_at"))
        return (0 if self.is_open(case) else 1, {"overdue": 0, "due_soon": 1}.get(due, 2),
                int(case.get("priority") or 9), -(created.timestamp() if created else 0.0))

    def cases_where(self, keep: Callable[[Json], bool], limit: int = 200) -> list[Json]:
        chosen = sorted((c for c in self.cases.values() if keep(c)), key=self.urgency_key)
        return [self.summary(c) for c in chosen[:limit]]

    def in_cell(self, cell: str, keep: Callable[[Json], bool] = lambda c: True) -> list[Json]:
        return self.cases_where(lambda c: c.get("cell") == cell and keep(c))

    def unlocated_list(self, limit: int = 200) -> list[Json]:
        """Tickets waiting for an operator to place them, oldest first (already masked by the worker; masked
        again here in case an older worker wrote them)."""
        rows = sorted(self.unlocated.values(), key=lambda m: float(m.get("occurred_at") or 0))
        return [{"event_id": m.get("event_id"), "category": m.get("category"),
                 "occurred_at": _epoch_iso(m.get("occurred_at")), "address": mask_text(str(m.get("address") or "")),
                 "description": mask_text(str(m.get("description") or ""))[:500],
                 "request_type": m.get("request_type"), "channel": m.get("channel")} for m in rows[:limit]]

    def deadletters_recent(self, window_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(1 for ts, _, _ in self.recent_deadletters if now - window_s <= ts <= now + 60)

    def case_counts(self) -> Counter[tuple[str, str]]:
        """(team, status) -> number of known cases (for metrics)."""
        return Counter((str(c.get("team", "")), str(c.get("status", ""))) for c in self.cases.values())


def _epoch_iso(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(float(value), UTC).isoformat().replace("+00:00", "Z")
