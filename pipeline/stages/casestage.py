"""The cases stage's chain on each batch of the located topic: correlate reports into cases, dispatch them by the
rules, apply what teams report back, escalate what is late (docs/cases.md). The books themselves are
`pipeline.stages.cases.CaseBook`; this holds the clock and the order in which a batch reaches them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipeline.model.cases import CorrelationPolicy
from pipeline.model.events import CaseUpdate, Event
from pipeline.stages.cases import CaseBook
from pipeline.stages.lifecycle import Outcome, Router
from pipeline.stages.patrolreports import applied
from pipeline.wire import decode_located

SlaClock = Literal["stream", "wall", "live"]
LIVE_WITHIN = timedelta(minutes=2)    # `live`: the stage is live when its newest item is at most this old


def _wall_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CaseStage:
    """Applies located reports and updates to their books. The clock (docs/cases.md §7.2): `stream`, each book's
    own latest report or update time; `wall`, `wall_now()`; `live` (`make run`), the stream clock while the stage
    works through a backlog (yesterday's history keeps its own times) and the wall clock once its newest item is
    within `LIVE_WITHIN` of now. Either way, before and after each item the book escalates whatever fell due
    before the clock's time, and dispatches are stamped with it."""

    router_source: Any          # an object with `.current` (rules.engine.RulesHolder) or a Router itself
    policy: CorrelationPolicy = field(default_factory=CorrelationPolicy)
    clock: SlaClock = "stream"
    wall_now: Callable[[], datetime] = _wall_now
    newest: datetime | None = None      # the newest item time seen (the `live` clock's test)

    def is_live(self, wall: datetime) -> bool:
        """`live` clock: has the stage caught up with the wall clock?"""
        return self.newest is not None and wall - self.newest <= LIVE_WITHIN

    def router(self) -> Router:
        current = getattr(self.router_source, "current", None)
        return current if current is not None else self.router_source  # type: ignore[no-any-return]

    def apply(self, items: Iterable[tuple[str, bytes | Event | CaseUpdate]], books: dict[str, CaseBook]) -> Outcome:
        """Apply located reports and updates (as the located topic carries them, or decoded), in order, to the
        books they belong to. `books` maps book key -> book; a key not in it gets a new empty book (the caller
        loads existing ones first)."""
        out = Outcome()
        router = self.router()
        touched: dict[str, CaseBook] = {}
        wall = self.clock == "wall"
        for key, raw in items:
            book = books.get(key)
            if book is None:
                book = books[key] = CaseBook(key, self.policy)
            touched[key] = book
            item = raw if isinstance(raw, Event | CaseUpdate) else decode_located(raw)
            if wall:
                now = self.wall_now()
            else:
                at = item.at if isinstance(item, CaseUpdate) else item.occurred_at
                book.tick(at)
                now = book.clock
                if self.clock == "live":
                    self.newest = at if self.newest is None or at > self.newest else self.newest
                    current = self.wall_now()
                    if self.is_live(current):
                        book.tick(current)
                        now = book.clock
            book.escalate_overdue(now, out)
            if isinstance(item, CaseUpdate):
                book.apply_update(item, router, out, now)
            else:
                stored = len(out.events)
                book.add_event(item, router, out, now)
                patrol = applied(item, out.events[-1] if len(out.events) > stored else None)
                if patrol is not None:
                    out.patrol_reports.append(patrol)
            book.escalate_overdue(now, out)
        for book in touched.values():
            book.expire_parked(out)
        return out

    def escalate(self, books: Iterable[CaseBook], now: datetime | None = None) -> Outcome:
        """Escalate what is overdue in `books` by the wall clock (the timer of quiet books, §7.2)."""
        out = Outcome()
        at = self.wall_now() if now is None else now
        if self.clock == "live" and not self.is_live(at):
            return out          # still on a backlog: each book's own input moves its clock
        for book in books:
            book.escalate_overdue(at, out)
        return out
