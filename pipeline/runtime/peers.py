"""The processes of one stage tell each other where their event-time alignment stands (pipeline.runtime.align).

Each process of a stage with an aligner publishes, every `interval_s`, its aligner's `own` fronts (per source
topic: the earliest event time it has not sent on) to the compacted
topic `<app id>-<stage>-align`, keyed by a name of its own, and reads every other process's from it into
`Aligner.peer`. At stop it publishes a tombstone, so the others stop waiting for it at once; a process that died
without one is not waited for once `align.PEER_SILENCE_S` have passed since its last word (each word carries the
wall time it was sent at, so a process starting up does not wait for the dead ones of earlier runs).

A front of minus infinity (a partition assigned but not fetched yet: it may deliver anything) is sent as null.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.config import Settings
from pipeline.runtime.align import Aligner

log = logging.getLogger("cityops.align")


def topic_of(settings: Settings, stage: str) -> str:
    return f"{settings.app_id}-{stage}-align"


def encode(front: dict[str, float]) -> bytes:
    finite = {k: (None if v == float("-inf") else v) for k, v in front.items() if v != float("inf")}
    return orjson.dumps({"front": finite, "sent": time.time()})


def decode(value: bytes) -> tuple[dict[str, float], float]:
    """(front, seconds since it was sent)"""
    doc = orjson.loads(value)
    front: dict[str, Any] = doc.get("front") or {}
    return ({str(k): (float("-inf") if v is None else float(v)) for k, v in front.items()},
            time.time() - float(doc["sent"]))


class AlignPeers:
    """Publishes `aligner.own` and feeds the other processes' fronts into `aligner.peer` (see the module's text)."""

    def __init__(self, settings: Settings, stage: str, aligner: Aligner, interval_s: float = 0.05) -> None:
        self.settings = settings
        self.topic = topic_of(settings, stage)
        self.aligner = aligner
        self.interval = interval_s
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._sent: dict[str, float] | None = None
        aligner.peer_grace_s = max(aligner.peer_grace_s, 2.0)

    async def start(self) -> None:
        opts = self.settings.aiokafka_options()
        self._producer = AIOKafkaProducer(client_id=f"{self.topic}-producer", acks=1, linger_ms=0, **opts)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(client_id=f"{self.topic}-consumer", group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest", **opts)
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            parts = await self._partitions()
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(parts)])

    async def _partitions(self) -> set[int]:
        assert self._consumer is not None
        for _ in range(100):
            await self._consumer._client.force_metadata_update()   # noqa: SLF001 - aiokafka has no public call
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return set(parts)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.topic}: no partitions")

    async def run(self, stopping: Any) -> None:
        """Until `stopping()`: publish the fronts as soon as they change (and at least every second), read the
        others' as soon as they come (a stage waiting for a peer goes on within milliseconds of its word)."""
        assert self._producer is not None and self._consumer is not None
        changed = asyncio.Event()
        self.aligner.on_own = changed.set
        reader = asyncio.ensure_future(self._read(stopping))
        try:
            while not stopping():
                own = self.aligner.own
                if own != self._sent:
                    await self._producer.send(self.topic, encode(own), key=self.name)
                    self._sent = own
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    self._sent = None       # said again every second: the others' silence clock
        finally:
            reader.cancel()

    async def _read(self, stopping: Any) -> None:
        assert self._consumer is not None
        while not stopping():
            fetched = await self._consumer.getmany(timeout_ms=int(self.interval * 1000), max_records=1000)
            for records in fetched.values():
                for r in records:
                    if r.key is None or r.key == self.name:
                        continue
                    name = r.key.decode(errors="replace")
                    if r.value is None:
                        self.aligner.peers.pop(name, None)
                    else:
                        try:
                            self.aligner.peer(name, *decode(r.value))
                        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                            log.warning("align: unreadable progress of %s on %s", name, self.topic)

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.send_and_wait(self.topic, None, key=self.name), 5)
            except Exception as err:   # the others stop waiting for this process after align_stall_s anyway
                log.warning("align: could not say goodbye on %s: %s", self.topic, err)
            await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()
