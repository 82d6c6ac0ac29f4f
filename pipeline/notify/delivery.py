"""Steps 3-4 of a delivery (pipeline.notify.service describes the guarantee): its first slot (quiet hours,
rate limit), the attempts until it is delivered or dead, the retries' backoff, the dead letter."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

from pipeline.model.privacy import mask_text
from pipeline.notify.ledger import Attempt, Entry, rows_of
from pipeline.notify.state import NotifierState, channel_of, log
from pipeline.notify.targets import Target, TargetsSpec
from pipeline.notify.templates import Message


class Deliveries(NotifierState):
    """The notifier's deliveries: each new or resumed entry runs as a task of its own (`_start`)."""

    def _first_slot(self, entry: Entry, target: Target, spec: TargetsSpec, now: float) -> bool:
        """Set the new entry's state: `sending` (attempt 1) when it may go now, else `pending` until quiet hours
        end or the rate limit allows. Returns whether its rate-limit slot is already taken."""
        if entry.priority != 1 and target.quiet is not None:
            release = target.quiet.release_at(datetime.fromtimestamp(now, UTC), spec.tz)
            if release is not None:
                entry.state, entry.not_before = "pending", release.timestamp()
                return False
        wait = self.limiter.take(target, entry.priority, now)
        if wait > 0:
            entry.state, entry.not_before = "pending", now + wait
        else:
            entry.state, entry.attempt, entry.not_before = "sending", 1, now
        return True

    def _start(self, entry: Entry, reserved: bool, held: bool = False) -> None:
        task = asyncio.ensure_future(self._deliver(entry, reserved, held))
        self.tasks[entry.delivery_id] = task
        key = entry.delivery_id
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("notify: delivery %s failed unexpectedly", key, exc_info=task.exception())

    async def _deliver(self, entry: Entry, reserved: bool, held: bool) -> None:
        """Attempt `entry` until it is delivered or dead (retries wait; quiet hours and rate limit hold).
        `held`: the channel slot is already taken for the first attempt (its `sending` record is written)."""
        if held:
            await self._attempt(entry, held=True)
            reserved = True
        while not entry.final:
            if entry.state == "pending":
                await _sleep_until(entry.not_before)
                spec = self.targets.current
                target = spec.targets.get(entry.target)
                if target is None or channel_of(target, entry.channel) is None:
                    await self._give_up(entry, f"{entry.target}/{entry.channel} is no longer in the targets file")
                    return
                if not reserved:
                    now = time.time()
                    release = None if entry.priority == 1 or target.quiet is None else \
                        target.quiet.release_at(datetime.fromtimestamp(now, UTC), spec.tz)
                    if release is not None:
                        entry.not_before = release.timestamp()
                        await self._write([entry])
                        continue
                    reserved = True
                    wait = self.limiter.take(target, entry.priority, now)
                    if wait > 0:
                        entry.not_before = now + wait
                        continue
                slot = self._slot(entry)
                await slot.acquire()
                entry.state, entry.attempt = "sending", entry.attempt + 1
                try:
                    await self._write([entry])
                except BaseException:
                    slot.release()
                    raise
                await self._attempt(entry, held=True)
            reserved = True          # a retry does not queue for the rate limit again

    async def _attempt(self, entry: Entry, held: bool) -> None:
        """One attempt of a `sending` entry, then its outcome recorded; releases the channel slot it holds."""
        try:
            spec = self.targets.current
            target = spec.targets.get(entry.target)
            channel = channel_of(target, entry.channel) if target is not None else None
            if channel is None or entry.message is None:
                outcome = None
            else:
                assert self.sender is not None
                started = time.time()
                self.on_wire.add(entry.delivery_id)
                try:
                    outcome = await self.sender.send(channel, Message(**entry.message), entry.delivery(), spec.smtp)
                finally:
                    self.on_wire.discard(entry.delivery_id)
        finally:
            if held:
                self._slot(entry).release()
        if outcome is None:
            await self._give_up(entry, f"{entry.target}/{entry.channel} is no longer in the targets file")
            return
        ended = time.time()
        attempt = Attempt(entry.attempt, started, "delivered", "", round((ended - started) * 1000),
                          max(0, round((ended - entry.assigned_at) * 1000)))
        if outcome.ok:
            entry.record(attempt)
            entry.finish("delivered", ended)
            await self._write([entry])
            self.counters.delivered += 1
            key = (entry.target, entry.channel)
            self.counters.by_target[key] = self.counters.by_target.get(key, 0) + 1
            log.info("notify: %s delivered to %s/%s (case %s, P%d) in %.2f s", entry.delivery_id, entry.target,
                     entry.channel, entry.case_id, entry.priority, ended - entry.assigned_at)
        elif outcome.retry and entry.attempt < self.attempts:
            attempt.status, attempt.error = "retry", outcome.error
            entry.record(attempt)
            entry.state, entry.not_before = "pending", ended + self._backoff(entry.attempt)
            await self._write([entry])
            self.counters.retried += 1
            log.warning("notify: %s to %s/%s failed (attempt %d: %s); retrying in %.1f s", entry.delivery_id,
                        entry.target, entry.channel, entry.attempt, outcome.error, entry.not_before - ended)
        else:
            attempt.status, attempt.error = "failed", outcome.error
            entry.record(attempt)
            why = "no retry can fix it" if not outcome.retry else f"{entry.attempt} attempts"
            await self._give_up(entry, f"{outcome.error} ({why})", recorded=True)
            return
        self.rows.add(rows_of(entry)[-1:])

    async def _give_up(self, entry: Entry, reason: str, recorded: bool = False) -> None:
        """Dead-letter `entry`, then record it `dead` (a crash between the two repeats the dead letter)."""
        now = time.time()
        if not recorded:
            entry.record(Attempt(entry.attempt, now, "failed", mask_text(reason)[:300]))
        await self._dead_letter(entry, reason)
        entry.finish("dead", now)
        await self._write([entry])
        self.counters.dead += 1
        self.rows.add(rows_of(entry)[-1:])
        log.error("notify: %s to %s/%s (case %s, P%d) dead-lettered: %s", entry.delivery_id, entry.target,
                  entry.channel, entry.case_id, entry.priority, reason)

    def _backoff(self, attempt: int) -> float:
        base = min(self.settings.notify_backoff_cap_s, self.settings.notify_backoff_s * 2.0 ** max(0, attempt - 1))
        return float(base * random.uniform(0.8, 1.2))


async def _sleep_until(at: float) -> None:
    wait = at - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
