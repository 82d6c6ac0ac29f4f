"""The notifier's state and its records (pipeline.notify.service describes the whole): the deliveries by
partition, the tasks and the channel slots, the per-target rate limiter and the counters, and the two writes
every step ends in: a record in the ledger (`<app id>-notify-deliveries`) and a dead letter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.config import Settings
from pipeline.model.privacy import mask_text
from pipeline.notify.channels import Sender
from pipeline.notify.ledger import Entry
from pipeline.notify.rows import RowWriter
from pipeline.notify.targets import Channel, Target
from pipeline.notify.targetsfile import TargetsHolder
from pipeline.notify.templates import Renderer

log = logging.getLogger("cityops.notify")

CHANNEL_CONCURRENCY = 16        # requests on the wire at once per channel: a receiver is not flooded, and few
                                # requests are ever on the wire when a notifier dies


def group_of(settings: Settings) -> str:
    return f"{settings.app_id}-notify"


def ledger_topic(settings: Settings) -> str:
    return f"{settings.app_id}-notify-deliveries"


class Limiter:
    """A token bucket per target (generic cell rate): `take` says how long a message must wait to keep the
    target's rate. Priority 1 never waits (a gas leak is not held behind a rate limit), but counts, so the
    messages after it wait the longer."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}      # theoretical arrival time of the next message, per target

    def take(self, target: Target, priority: int, now: float) -> float:
        interval = 1.0 / target.rate.per_second
        tolerance = (target.rate.burst - 1) * interval
        tat = max(self._tat.get(target.name, now), now)
        wait = 0.0 if priority == 1 else max(0.0, tat - tolerance - now)
        self._tat[target.name] = tat + interval
        return wait


@dataclass
class Counters:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    replayed: int = 0          # deliveries skipped because the delivered set had them
    resumed: int = 0           # unfinished deliveries taken over from the changelog
    interrupted: int = 0       # of those, attempts that were on the wire when their notifier stopped
    by_target: dict[tuple[str, str], int] = field(default_factory=dict)



class NotifierState:
    """What a notifier holds between steps, and its writes to the ledger and the dead-letter topic (the
    delivery steps are pipeline.notify.delivery, the loop pipeline.notify.service)."""

    def __init__(self, settings: Settings, targets: TargetsHolder, rules: Any, renderer: Renderer,
                 rows: RowWriter, *, attempts: int | None = None) -> None:
        self.settings = settings
        self.targets = targets
        self.rules = rules                       # rules.engine.RulesHolder, or None
        self.renderer = renderer
        self.rows = rows
        self.attempts = attempts or settings.notify_attempts
        self.limiter = Limiter()
        self.counters = Counters()
        self.entries: dict[int, dict[str, Entry]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.on_wire: set[str] = set()
        self.owned: set[int] = set()
        self.topic = settings.topics.assignments
        self.ledger = ledger_topic(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sender: Sender | None = None
        self._lock = asyncio.Lock()
        self._slots: dict[tuple[str, str], asyncio.Semaphore] = {}
        self._last_reload = 0.0
        self._last_prune = time.monotonic()


    def _slot(self, entry: Entry) -> asyncio.Semaphore:
        """The channel's connections: a delivery holds one from its `sending` record to the end of the attempt."""
        return self._slots.setdefault((entry.target, entry.channel), asyncio.Semaphore(CHANNEL_CONCURRENCY))

    # -- the records -----------------------------------------------------------------------------------------

    async def _write(self, entries: Iterable[Entry]) -> None:
        """Write the entries' records and wait until the broker has them all."""
        assert self._producer is not None
        sends = [await self._producer.send(self.ledger, value=e.to_bytes(), key=e.delivery_id.encode(),
                                           partition=e.partition) for e in entries]
        if sends:
            await asyncio.gather(*sends)

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        assert self._producer is not None
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {"source_topic": self.topic, "partition": entry.partition, "offset": entry.offset,
                "reason": mask_text(f"notification to {entry.target}/{entry.channel} given up: {reason}")[:500],
                "raw": entry.raw, "raw_encoding": "utf-8", "at": at, "kind": "notification",
                "delivery_id": entry.delivery_id, "assignment_id": entry.assignment_id, "case_id": entry.case_id,
                "target": entry.target, "channel": entry.channel, "priority": entry.priority,
                "attempts": entry.attempt}
        await (await self._producer.send(self.settings.topics.deadletter, value=orjson.dumps(body), key=b"notify"))


def channel_of(target: Target | None, name: str) -> Channel | None:
    if target is None:
        return None
    return next((c for c in target.channels if c.name == name), None)

