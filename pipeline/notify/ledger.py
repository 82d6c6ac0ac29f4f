"""The delivered set: one record per delivery (assignment × target × channel), kept in a compacted changelog.

A record's `state` is the delivery's whole story so far:

    pending    accepted, not being sent: waiting for quiet hours to end, for the target's rate limit, or for
               the next retry (`not_before`); nothing of it has gone out since the last attempt ended
    sending    attempt `attempt` may be on the wire right now (written *before* the request is made)
    delivered  the receiver accepted attempt `attempt`                        (final)
    dead       given up: retries spent, or an answer that no retry can fix; dead-lettered     (final)

The record carries the rendered message until it is final (so a resend after a crash says exactly what the
first attempt said) and every finished attempt (`attempts`: what the `notifications` table stores, re-stored
after a restart, idempotently). The key is the delivery id; the partition is the partition of the assignment it
came from, so a notifier that is given a partition of the assignments topic restores exactly the records of
the assignments it will read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from pipeline.notify.plan import Delivery

State = Literal["pending", "sending", "delivered", "dead"]
FINAL: frozenset[str] = frozenset({"delivered", "dead"})


@dataclass
class Attempt:
    """One finished attempt: `status` delivered, retry (failed, tried again later), failed (failed, given up),
    interrupted (the notifier stopped while it was on the wire: resent with the same key) or missing (no such
    target)."""

    n: int
    at: float                  # when it started (epoch seconds)
    status: str
    error: str = ""
    latency_ms: int = 0        # how long the attempt took
    since_assignment_ms: int = 0   # from the assignment's Kafka timestamp to the end of this attempt


@dataclass
class Entry:
    """A delivery's changelog record (module docstring)."""

    delivery_id: str
    assignment_id: str
    case_id: str
    target: str
    channel: str
    channel_kind: str
    priority: int
    kind: str                  # the assignment's kind: dispatch, reroute, rework, escalation
    partition: int             # of the assignment on the assignments topic
    offset: int
    assigned_at: float         # the assignment's Kafka timestamp (epoch seconds)
    state: State = "pending"
    attempt: int = 0           # attempts started so far
    not_before: float = 0.0
    message: dict[str, Any] | None = None     # {"subject", "text", "fields"} until final
    attempts: list[Attempt] = field(default_factory=list)
    finished_at: float | None = None
    raw: str = ""              # the assignment as read (masked), for the dead letter; dropped when final

    @classmethod
    def new(cls, d: Delivery, kind: str, partition: int, offset: int, assigned_at: float) -> Entry:
        return cls(d.delivery_id, d.assignment_id, d.case_id, d.target, d.channel, d.channel_kind, d.priority,
                   kind, partition, offset, assigned_at)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def delivery(self) -> Delivery:
        return Delivery(self.delivery_id, self.assignment_id, self.case_id, self.target, self.channel,
                        self.channel_kind, self.priority)

    def finish(self, state: State, at: float) -> None:
        self.state, self.finished_at = state, at
        self.message, self.raw = None, ""

    def record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        d = orjson.loads(raw)
        d["attempts"] = [Attempt(**a) for a in d.get("attempts") or ()]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class NotificationRow:
    """A row of the ClickHouse table `notifications` (pipeline/sink/migrations/0006_notifications.sql): one attempt."""

    delivery_id: str
    attempt: int
    assignment_id: str
    case_id: str
    target: str
    channel: str
    channel_kind: str
    kind: str
    priority: int
    status: str
    error: str
    sent_at: datetime
    latency_ms: int
    since_assignment_ms: int


def rows_of(entry: Entry) -> list[NotificationRow]:
    """Every finished attempt of `entry` as a table row (a replay writes the same rows: de-duplicated by key)."""
    return [NotificationRow(entry.delivery_id, a.n, entry.assignment_id, entry.case_id, entry.target,
                            entry.channel, entry.channel_kind, entry.kind, entry.priority, a.status, a.error,
                            datetime.fromtimestamp(a.at, UTC), a.latency_ms, a.since_assignment_ms)
            for a in entry.attempts]
