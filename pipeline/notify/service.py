"""The notifier (`cityops notify`): the assignments topic in, each (assignment, target, channel) delivered once.

Wiring, top to bottom:

    cityops.assignments --(group <app id>-notify)--> plan (pipeline.notify.plan: who hears about it)
        -> ledger check: a delivery id already in the delivered set is a replay: nothing more happens
        -> render (pipeline.notify.templates) -> record `sending` (or `pending`) in <app id>-notify-deliveries
        -> commit the assignment's offset
        -> send (pipeline.notify.channels) -> record `delivered`, or `pending` + backoff (retry), or
           dead letter + `dead`;   every finished attempt -> ClickHouse `notifications` (pipeline.notify.rows)

The delivery guarantee, step by step (a record is "written" when the broker acknowledged it, acks=all):

1. An assignment is read. Its deliveries whose ids are in the delivered set are skipped: that is what makes a
   replay (the worker re-sending assignments after a crash, or this notifier re-reading uncommitted offsets)
   send nothing twice.
2. For each new delivery a record is written: `sending` with attempt 1 when it may go at once, else `pending`
   with the time it may go (quiet hours, rate limit). Only then is the assignment's offset committed.
   Killed before the records are written: the offset was not committed either; the restart reads the
   assignment again and nothing was sent (no record, no request). Killed after the records, before the commit:
   the restart reads it again and step 1 skips it; its records are resumed (below).
3. The request is made (`Idempotency-Key` = the delivery id, the same on every attempt).
4. The outcome is written: `delivered` (final), `pending` with the next attempt's time, or, after
   `CITYOPS_NOTIFY_ATTEMPTS` attempts or an answer no retry can fix, a dead letter and then `dead` (final).
   Killed between 3 and 4 (the request on the wire or answered, the outcome not written): the record still says
   `sending`. A notifier that restores it (the restart, or another member of the group) cannot know whether the
   receiver got it, so it records that attempt as `interrupted` and sends again *with the same key*: the only
   way a receiver ever sees a delivery twice, both times with one idempotency key, which a receiver that
   de-duplicates (the webhook contract, the SMS gateway, cityops' own inbox) applies once. For the group robots
   and SMTP, which cannot de-duplicate, this is at-least-once: a second message rather than a missing gas-leak
   warning. Killed after the dead letter, before `dead`: the dead letter may be written again, with the same
   `delivery_id`.
5. Rebalance and SIGTERM wait up to 15 s for requests on the wire to be answered and recorded, so an orderly
   handover or stop never leaves a `sending` record behind; waiting deliveries simply move with their records.

Records are kept in a compacted topic partitioned like the assignments (a delivery on the partition of its
assignment); finished ones are removed after `CITYOPS_NOTIFY_KEEP_DAYS`. A notifier that is given a partition
reads its records first, then resumes every unfinished delivery and re-stores every recorded attempt in ClickHouse
(idempotent). Retries wait `CITYOPS_NOTIFY_BACKOFF` × 2ⁿ, at most `CITYOPS_NOTIFY_BACKOFF_CAP`, with jitter; a
channel that is down does not hold up the others, nor the offsets (the records hold the deliveries).
Dead letters go to the existing `cityops.deadletter` topic with `source_topic` = the assignments topic, the
assignment's partition and offset, `kind: "notification"`, the delivery id, target, channel, priority and the
reason; `raw` is the assignment (masked).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from pipeline.config import Settings
from pipeline.model.privacy import mask_text
from pipeline.notify.channels import Sender
from pipeline.notify.delivery import Deliveries
from pipeline.notify.ledger import Attempt, Entry, rows_of
from pipeline.notify.plan import Delivery, delivery_id, plan
from pipeline.notify.rows import RowWriter
from pipeline.notify.state import channel_of, group_of, log
from pipeline.notify.targets import names_in_rules
from pipeline.notify.targetsfile import TargetsHolder
from pipeline.notify.templates import Message, Renderer

HANDOVER_WAIT_S = 15.0          # a rebalance or stop waits this long for requests on the wire
MAX_IN_FLIGHT = 20_000          # unfinished deliveries before the notifier stops reading (backpressure)
PRUNE_EVERY_S = 60.0
RELOAD_EVERY_S = 2.0


class Notifier(Deliveries):
    """The notifier process's loop (module docstring): accept assignments, take partitions over and hand them
    back, upkeep; the deliveries themselves are pipeline.notify.delivery. `sender` sends one message (tests may
    give their own); `rows` stores attempts in ClickHouse."""

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        opts = self.settings.aiokafka_options()
        await asyncio.get_running_loop().run_in_executor(None, self._ensure_topics)
        self._producer = AIOKafkaProducer(client_id=f"{group_of(self.settings)}-producer", acks="all",
                                          enable_idempotence=True, linger_ms=1, **opts)
        await self._producer.start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, limit_per_host=50))
        if self.sender is None:
            self.sender = Sender(self._session)
        self._consumer = AIOKafkaConsumer(client_id=f"{group_of(self.settings)}-consumer",
                                          group_id=group_of(self.settings), enable_auto_commit=False,
                                          auto_offset_reset="earliest", max_poll_records=500, **opts)
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_Listener(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Read and deliver until `stop` is set, then hand over cleanly (requests on the wire answered)."""
        await self.start()
        try:
            while not stop.is_set():
                assert self._consumer is not None
                if len(self.tasks) >= MAX_IN_FLIGHT:
                    await asyncio.sleep(0.05)
                    continue
                batches = await self._consumer.getmany(timeout_ms=100, max_records=500)
                offsets: dict[TopicPartition, int] = {}
                async with self._lock:
                    for tp, batch in batches.items():
                        if tp.partition in self.owned and batch:
                            await self.accept(tp, batch)
                            offsets[tp] = batch[-1].offset + 1
                if offsets:
                    await self._commit(offsets)
                await self._upkeep()
        finally:
            await self.close()

    async def close(self) -> None:
        async with self._lock:
            await self._hand_over(set(self.owned))
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._session is not None:
            await self._session.close()
        await asyncio.get_running_loop().run_in_executor(None, self.rows.flush)

    # -- step 1-2: accept a batch of assignments ------------------------------------------------------------

    async def accept(self, tp: TopicPartition, batch: list[Any]) -> None:
        """Plan the batch's deliveries, skip those recorded before, record the new ones and start them (the
        caller commits the batch's offset after this returns)."""
        now = time.time()
        spec = self.targets.current
        rules = self.rules.current.spec if self.rules is not None else None
        table = self.entries.setdefault(tp.partition, {})
        new: list[tuple[Entry, bool, bool]] = []      # (entry, rate slot taken, channel slot held)
        dead: list[Entry] = []
        for rec in batch:
            a = _assignment(rec.value)
            if a is None:
                log.error("notify: %s[%d]@%d is not an assignment; skipped", tp.topic, tp.partition, rec.offset)
                continue
            deliveries, missing = plan(a, rules, spec)
            raw = mask_text(rec.value.decode("utf-8", "replace"))
            assigned_at = rec.timestamp / 1000 if rec.timestamp and rec.timestamp > 0 else now
            for d in deliveries:
                if d.delivery_id in table:
                    self.counters.replayed += 1
                    continue
                entry = Entry.new(d, str(a.get("kind") or "dispatch"), tp.partition, rec.offset, assigned_at)
                entry.raw = raw
                target = spec.targets[d.target]
                channel = channel_of(target, d.channel)
                assert channel is not None
                entry.message = _as_dict(self.renderer.render(a, target, channel, spec))
                table[d.delivery_id] = entry
                reserved = self._first_slot(entry, target, spec, now)
                held = False
                if entry.state == "sending":
                    slot = self._slot(entry)
                    if slot.locked():        # the channel's connections are busy: it waits, not on the wire
                        entry.state, entry.attempt = "pending", 0
                    else:
                        await slot.acquire()     # free: returns at once
                        held = True
                new.append((entry, reserved, held))
            for m in missing:
                mid = delivery_id(m.assignment_id, m.target, "-")
                if mid in table:
                    continue
                entry = Entry.new(Delivery(mid, m.assignment_id, m.case_id, m.target, "-", "", int(a.get("priority")
                                  or 9)), str(a.get("kind") or "dispatch"), tp.partition, rec.offset, assigned_at)
                entry.raw, entry.attempt = raw, 1
                entry.record(Attempt(1, now, "missing", f"no target {m.target!r} in {spec.path}"))
                table[mid] = entry
                dead.append(entry)
        for entry in dead:      # at-least-once: a crash before the record below writes the dead letter again
            log.error("notify: assignment %s names target %r, which %s does not define", entry.assignment_id,
                      entry.target, spec.path)
            await self._dead_letter(entry, f"no target {entry.target!r} in the targets file")
            entry.finish("dead", now)
            self.rows.add(rows_of(entry))
        try:
            await self._write([e for e, _, _ in new] + dead)
        except BaseException:
            for entry, _, held in new:
                if held:
                    self._slot(entry).release()
            raise
        for entry, reserved, held in new:
            self._start(entry, reserved, held)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit what `accept` recorded (outside the lock: a commit may wait for a rebalance, whose callbacks
        take the lock)."""
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except Exception as err:     # a rebalance under way: the next owner re-reads; the ledger skips them
            log.warning("notify: commit of %s failed: %s", sorted((tp.topic, tp.partition) for tp in offsets), err)

    # -- partitions come and go ------------------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions - self.owned):
                self.entries[p] = await self._restore(p)
                self._resume(self.entries[p].values())
            self.owned |= partitions

    def _resume(self, entries: Iterable[Entry]) -> None:
        now = time.time()
        for entry in entries:
            self.rows.add(rows_of(entry))             # re-stored: one row per attempt key in the end
            if entry.final or entry.delivery_id in self.tasks:
                continue
            self.counters.resumed += 1
            if entry.state == "sending":
                self.counters.interrupted += 1
                entry.record(Attempt(entry.attempt, entry.not_before or now, "interrupted",
                                     "the notifier stopped while this attempt was on the wire; sent again with "
                                     "the same idempotency key"))
                self.rows.add(rows_of(entry)[-1:])
                entry.state, entry.not_before = "pending", now
                log.warning("notify: %s to %s/%s was on the wire when its notifier stopped; sending it again "
                            "with the same key", entry.delivery_id, entry.target, entry.channel)
            self._start(entry, reserved=entry.attempt > 0)

    async def revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            await self._hand_over(partitions)

    async def _hand_over(self, partitions: set[int]) -> None:
        """Let requests on the wire finish and be recorded (up to HANDOVER_WAIT_S), stop the waiting ones,
        forget the partitions."""
        ids = [k for p in partitions for k in self.entries.get(p, {})]
        wire = [self.tasks[k] for k in ids if k in self.on_wire and k in self.tasks]
        if wire:
            await asyncio.wait(wire, timeout=HANDOVER_WAIT_S)
        for k in ids:
            task = self.tasks.pop(k, None)
            if task is not None:
                task.cancel()
        for p in partitions:
            self.entries.pop(p, None)
        self.owned -= partitions

    async def _restore(self, partition: int) -> dict[str, Entry]:
        """The records of one partition of the ledger, read from its beginning to its end now."""
        consumer = AIOKafkaConsumer(client_id=f"{group_of(self.settings)}-restore", enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.settings.aiokafka_options())
        await consumer.start()
        out: dict[str, Entry] = {}
        try:
            tp = TopicPartition(self.ledger, partition)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # an explicit seek: with aiokafka 0.14, `position` right after `seek_to_beginning` on a new
            # assignment answered the end offset, and the restore read nothing
            consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
            while await consumer.position(tp) < end:
                for batch in (await consumer.getmany(tp, timeout_ms=500, max_records=20_000)).values():
                    for r in batch:
                        if r.offset >= end:
                            continue
                        key = (r.key or b"").decode()
                        if r.value is None:
                            out.pop(key, None)
                        else:
                            out[key] = Entry.from_bytes(r.value)
        finally:
            await consumer.stop()
        log.info("notify: restored %d deliveries of partition %d", len(out), partition)
        return out

    # -- upkeep ----------------------------------------------------------------------------------------------

    async def _upkeep(self) -> None:
        now = time.monotonic()
        if now - self._last_reload >= RELOAD_EVERY_S:
            self._last_reload = now
            await asyncio.get_running_loop().run_in_executor(None, self._reload)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            await self._prune()

    def _reload(self) -> None:
        if self.rules is not None and self.rules.maybe_reload():
            missing = sorted(set(names_in_rules(self.rules.current.spec)) - set(self.targets.current.targets))
            if missing:
                log.warning("notify: the new ruleset names targets the targets file lacks: %s (their "
                            "notifications will be dead-lettered until the file defines them)", ", ".join(missing))
        self.targets.maybe_reload()

    async def _prune(self) -> None:
        """Forget deliveries finished longer than `notify_keep_days` ago (tombstones in the ledger)."""
        assert self._producer is not None
        horizon = time.time() - self.settings.notify_keep_days * 86400
        async with self._lock:
            for p, table in self.entries.items():
                old = [k for k, e in table.items() if e.final and (e.finished_at or 0) < horizon]
                for k in old:
                    del table[k]
                    await self._producer.send(self.ledger, value=None, key=k.encode(), partition=p)

    def _ensure_topics(self) -> None:
        """The cityops topics, and the ledger: compacted, partitioned like the assignments topic."""
        from pipeline.runtime.topics import ensure_derived

        ensure_derived(self.settings, {self.ledger: self.topic}, group_of(self.settings))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.notifier.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.notifier.assigned({tp.partition for tp in assigned})


def _assignment(raw: bytes | None) -> dict[str, Any] | None:
    try:
        a = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return a if isinstance(a, dict) and isinstance(a.get("assignment_id"), str) else None


def _as_dict(m: Message) -> dict[str, Any]:
    return {"subject": m.subject, "text": m.text, "fields": m.fields}


def build(settings: Settings) -> Notifier:
    """A notifier on the real files: rules (CITYOPS_RULES), targets (CITYOPS_NOTIFY_TARGETS), the gazetteer,
    the taxonomy and the ClickHouse sink. A bad targets or rules file stops it here, loudly."""
    from pipeline.model.privacy import pii_key
    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.notify.place import Places
    from pipeline.sink.sink import ClickHouseSink
    from rules.engine import RulesHolder

    pii_key(settings.pii_key, settings.production)
    rules = RulesHolder(settings.rules_path)
    targets = TargetsHolder(settings.notify_targets, lambda: names_in_rules(rules.current.spec),
                            dict(settings.notify_secrets))
    renderer = Renderer(default_taxonomy(), Places.load())
    return Notifier(settings, targets, rules, renderer, RowWriter(ClickHouseSink(settings)))


def run_notifier(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT (which hand over cleanly)."""
    notifier = build(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.warning("notify: %s reading %s as group %s; targets %s (version %s)", settings.app_id,
                    settings.topics.assignments, group_of(settings), settings.notify_targets,
                    notifier.targets.current.version)
        await notifier.run(stop)

    asyncio.run(main())
    return 0
