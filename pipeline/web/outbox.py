"""What the web writes to Kafka, and the validation each message passes first.

Everything the web sends is first run through the worker's own decoder (`pipeline.stages.decode.Decoder`), so a message
the web accepts is one the worker accepts, and an API's 400 reason is the worker's dead-letter reason.
`Outbox` is the small interface the handlers use; `KafkaOutbox` sends with kafka-python and waits for the
broker's acknowledgement (off the event loop), `MemoryOutbox` keeps messages for unit tests.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from pipeline.config import Settings
from pipeline.stages.decode import Decoder
from pipeline.stages.fields import InvalidEvent


class Outbox(Protocol):
    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Send one message and return once the broker acknowledged it (raises when it could not)."""


@dataclass
class MemoryOutbox:
    """An outbox that records messages (unit tests; also what `--no-kafka` dry runs would use)."""

    sent: list[tuple[str, str, bytes]] = field(default_factory=list)
    fail: Exception | None = None

    async def send(self, topic: str, key: str, value: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((topic, key, value))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, _, v in self.sent if t == topic]


class KafkaOutbox:
    """kafka-python producer, acks=all; `send` waits for the acknowledgement in a worker thread."""

    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        from kafka import KafkaProducer

        self.timeout_s = timeout_s
        self._producer = KafkaProducer(acks="all", linger_ms=2, retries=5, client_id="cityops-web",
                                       **settings.kafka_client_options())

    async def send(self, topic: str, key: str, value: bytes) -> None:
        future = self._producer.send(topic, key=key.encode(), value=value)
        await asyncio.get_running_loop().run_in_executor(None, lambda: future.get(timeout=self.timeout_s))

    def close(self) -> None:
        self._producer.close(timeout=5)


_APP_REPORT_ID = re.compile(r"WEB-\d{8}-[0-9a-f]{8,32}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def case_update(decoder: Decoder, *, case_id: str, action: str, team: str, actor: str, note: str = "",
                update_id: str | None = None, photo_url: str = "") -> bytes:
    """A `cityops.case-updates` message, validated (raises `InvalidEvent` with the worker's reason).

    `update_id` defaults to a fresh uuid; the pages send one per rendered action button, so a double click
    (two posts with the same id) is applied once by the worker.
    """
    msg: dict[str, Any] = {"update_id": update_id or uuid.uuid4().hex, "case_id": case_id, "action": action,
                           "team": team, "actor": actor, "at": now_iso()}
    if note:
        msg["note"] = note
    if photo_url:
        msg["photo_url"] = photo_url
    raw = orjson.dumps(msg)
    decoder.case_update(raw)
    return raw


def patrol_report(decoder: Decoder, *, patrol_team: str, inspector: str, category: str, lat: Any, lon: Any,
                  note: str = "", report_id: str | None = None, photo_url: str = "") -> tuple[str, bytes]:
    """A `cityops.raw.patrol` message, validated; returns (report id, bytes). A `report_id` from the app (its
    offline queue sends one) makes a resend the same report."""
    if report_id is not None and not _APP_REPORT_ID.fullmatch(report_id):
        raise InvalidEvent("report_id: an app's report id looks like WEB-20260302-<8 to 32 hex digits>")
    rid = report_id or f"WEB-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:10]}"
    msg: dict[str, Any] = {"report_id": rid, "observed_at": now_iso(), "team": patrol_team, "inspector": inspector,
                           "category": category, "lat": lat, "lon": lon}
    if note:
        msg["note"] = note
    if photo_url:
        msg["photo_url"] = photo_url
    raw = orjson.dumps(msg)
    decoder.patrol(raw)
    return rid, raw


def placed_ticket(decoder: Decoder, unlocated: dict[str, Any], lon: float, lat: float) -> tuple[str, bytes]:
    """The hotline ticket of an unlocated event, re-submitted with the position an operator chose.

    The same `service_request_id` keeps the event id, so the ticket stays one event. The unlocated message
    carries no caller (personal data never left the worker), so the re-submitted ticket has none either.
    """
    event_id = str(unlocated["event_id"])
    ticket = event_id.removeprefix("hotline:")
    occurred = datetime.fromtimestamp(float(unlocated["occurred_at"]), UTC)
    msg: dict[str, Any] = {"service_request_id": ticket,
                           "requested_datetime": occurred.isoformat().replace("+00:00", "Z"),
                           "service_code": unlocated["category"], "lat": lat, "long": lon}
    for src, dst in (("description", "description"), ("request_type", "request_type"), ("channel", "channel"),
                     ("address", "address_string"), ("address_id", "address_id"), ("media_url", "media_url")):
        if unlocated.get(src):
            msg[dst] = unlocated[src]
    if unlocated.get("attributes"):         # the Open311 answers, kept as JSON text on the way
        msg["attributes"] = orjson.loads(unlocated["attributes"])
    raw = orjson.dumps(msg)
    decoder.hotline(raw)
    return ticket, raw
