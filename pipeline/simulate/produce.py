"""Getting simulated (or recorded) messages out: to Kafka at a chosen speed, or to NDJSON files, and back.

Speeds: `realtime` (one simulated second per second), `x60` or any `xN` (N times faster), `max` (no pacing).
Pacing follows event time from the first message, so a realtime run started at `now` produces each message
when its time comes. NDJSON lines: {"topic": <unprefixed topic name>, "key": ..., "at": ..., and one of
"value" (the JSON message), "value_text" (bytes that are UTF-8 but not a JSON object's canonical form) or
"value_base64"}; the configured topic prefix (CITYOPS_TOPIC_PREFIX) is added when producing.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.config import Settings, Topics
from pipeline.simulate.generate import LOGICAL, SimMessage, Simulation

_BY_NAME = {getattr(LOGICAL, f): f for f in Topics.__dataclass_fields__ if f != "prefix"}


def speed_factor(speed: str) -> float | None:
    """Simulated seconds per wall second for `realtime`, `x60`, `xN`; None for `max`. ValueError otherwise."""
    s = speed.strip().lower()
    if s == "max":
        return None
    if s == "realtime":
        return 1.0
    if s.startswith("x"):
        try:
            factor = float(s[1:])
        except ValueError:
            factor = 0.0
        if factor > 0:
            return factor
    raise ValueError(f"--speed: {speed!r} is not realtime, max or xN (e.g. x60)")


class Progress:
    """A plain progress bar on a terminal (or a line every 10 % when not a terminal)."""

    def __init__(self, total: int, label: str, out: IO[str] | None = None, every_s: float = 0.25) -> None:
        self.total, self.label = max(1, total), label
        self.out = out if out is not None else sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = 0.0
        self._last_decile = -1

    def update(self, done: int, at: datetime | None = None, force: bool = False) -> None:
        now = time.monotonic()
        frac = min(1.0, done / self.total)
        decile = int(frac * 10)
        if self.tty and (force or now - self._last >= self.every_s):
            self._last = now
            bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
            rate = done / max(1e-6, now - self.started)
            when = f"  sim {at.astimezone().strftime('%Y-%m-%d %H:%M')}" if at else ""
            self.out.write(f"\r{self.label} [{bar}] {frac:6.1%} {done:,}/{self.total:,}{when}  {rate:,.0f} msg/s ")
            self.out.flush()
        elif not self.tty and (decile > self._last_decile or force):
            self._last_decile = decile
            self.out.write(f"{self.label}: {frac:.0%} ({done:,}/{self.total:,})\n")
            self.out.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()


@dataclass
class ProduceReport:
    """What a produce run did: messages per topic, failures, and wall time."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0
    first_error: str = ""

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def paced(messages: Iterable[SimMessage], factor: float | None,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
          ) -> Iterator[SimMessage]:
    """The messages, each held back until its event time (scaled by `factor`) has come; `None`: no wait."""
    wall0: float | None = None
    t0: datetime | None = None
    for m in messages:
        if factor is not None:
            if t0 is None:
                t0, wall0 = m.at, clock()
            assert wall0 is not None
            due = wall0 + (m.at - t0).total_seconds() / factor
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        yield m


def produce_messages(settings: Settings, messages: Iterable[SimMessage], total: int, speed: str = "max",
                     progress: Progress | None = None, producer: Any = None) -> ProduceReport:
    """Send messages to their topics (with the settings' prefix), paced by `speed`; flush and report.

    kafka-python producer: batching (linger_ms, batch_size), acks=all; a failed send is counted and the run
    raises RuntimeError at the end, after everything else was flushed.
    """
    factor = speed_factor(speed)
    own = producer is None
    if producer is None:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024, retries=5,
                                 max_in_flight_requests_per_connection=5, **settings.kafka_client_options())
    report = ProduceReport()
    started = time.monotonic()
    topics = settings.topics

    def failed(err: Exception) -> None:
        report.failed += 1
        report.first_error = report.first_error or repr(err)

    done = 0
    try:
        for m in paced(messages, factor):
            topic = getattr(topics, m.topic)
            producer.send(topic, key=m.key, value=m.value).add_errback(failed)
            report.sent[topic] = report.sent.get(topic, 0) + 1
            done += 1
            if progress is not None and (done & 1023 == 0 or factor is not None):
                progress.update(done, m.at)
        producer.flush(timeout=120)
    finally:
        if own:
            producer.close(timeout=30)
    if progress is not None:
        progress.close(done)
    report.seconds = time.monotonic() - started
    if report.failed:
        raise RuntimeError(f"{report.failed} of {done} messages were not acknowledged by Kafka: {report.first_error}")
    del total
    return report


def produce_simulation(settings: Settings, simulation: Simulation, speed: str = "max",
                       progress: Progress | None = None) -> ProduceReport:
    """Produce every message of `simulation` in time order to the settings' topics, paced by `speed`."""
    return produce_messages(settings, simulation.messages(), len(simulation), speed, progress)


# -- NDJSON ---------------------------------------------------------------------------------------------

def to_line(m: SimMessage) -> bytes:
    rec: dict[str, Any] = {"topic": getattr(LOGICAL, m.topic), "key": m.key.decode() if m.key else None,
                           "at": m.at.isoformat().replace("+00:00", "Z")}
    try:
        obj = orjson.loads(m.value)
        canonical = isinstance(obj, dict) and orjson.dumps(obj) == m.value
    except orjson.JSONDecodeError:
        canonical = False
    if canonical:
        rec["value"] = orjson.Fragment(m.value)
    else:
        try:
            rec["value_text"] = m.value.decode("utf-8")
        except UnicodeDecodeError:
            rec["value_base64"] = base64.b64encode(m.value).decode()
    return orjson.dumps(rec) + b"\n"


def write_ndjson(messages: Iterable[SimMessage], path: Path, progress: Progress | None = None) -> int:
    """Write messages as NDJSON lines; returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as fh:
        for m in messages:
            fh.write(to_line(m))
            n += 1
            if progress is not None and n & 4095 == 0:
                progress.update(n, m.at)
    if progress is not None:
        progress.close(n)
    return n


class RecordingError(ValueError):
    """A recorded NDJSON line that cannot be replayed; the message names the file and line."""


def read_ndjson(path: Path) -> Iterator[SimMessage]:
    """The messages of a recording, exactly as they were written (RecordingError on a bad line)."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            yield from_line(line, f"{path}:{n}")


def from_line(line: bytes, where: str) -> SimMessage:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise RecordingError(f"{where}: not JSON: {err}") from None
    if not isinstance(rec, dict):
        raise RecordingError(f"{where}: not a JSON object")
    topic = _BY_NAME.get(str(rec.get("topic")))
    if topic is None:
        raise RecordingError(f"{where}: topic: {rec.get('topic')!r} is not a cityops input topic")
    try:
        at = datetime.fromisoformat(str(rec["at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise RecordingError(f"{where}: at: missing or not an ISO time") from None
    if at.tzinfo is None:
        raise RecordingError(f"{where}: at: needs an offset")
    if "value" in rec:
        value = orjson.dumps(rec["value"])
    elif "value_text" in rec and isinstance(rec["value_text"], str):
        value = rec["value_text"].encode()
    elif "value_base64" in rec:
        try:
            value = base64.b64decode(str(rec["value_base64"]), validate=True)
        except ValueError:
            raise RecordingError(f"{where}: value_base64: not base64") from None
    else:
        raise RecordingError(f"{where}: value: one of value, value_text, value_base64 is required")
    key = rec.get("key")
    return SimMessage(topic, key.encode() if isinstance(key, str) else None, value, at)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())
