"""A living district: the simulator on the wall clock (`python -m pipeline.simulate.live`, and `make run`).

The simulated district is planned a day at a time, as `cityops simulate` plans it, and produced in three steps:

1. **yesterday** (Asia/Shanghai) at full speed: the history the reports and the last-seven-days figures read;
2. **today from midnight to now** at full speed: the open cases, the overdue ones and the queues are those of
   now;
3. **from now on in real time**: each new ticket, patrol report, sensor reading and each of the simulated teams'
   accept / resolve / verify is produced when its time comes, until stopped. At midnight the next day is
   planned (same seed and sensors, the sensor registry file rewritten for the worker to re-read).

A message is never produced before its time (the worker refuses times more than 5 minutes ahead). Updates the
planner placed after the end of their planned day are not sent (a case opened late in the evening may stay
open past midnight), as in a simulated period of N days.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.simulate.config import SHANGHAI, SimConfig
from pipeline.simulate.generate import SimMessage, Simulation, simulate


def local_midnight(at: datetime) -> datetime:
    """The Asia/Shanghai midnight that starts `at`'s local day, in UTC."""
    local = at.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


@dataclass
class LiveStatus:
    """What the live feed has done so far (read by `cityops run` to print where it is)."""

    sent: int = 0
    caught_up_at: datetime | None = None     # when the feed first reached the wall clock
    last_at: datetime | None = None          # the time of the last message produced
    days_planned: int = 0


class LiveDistrict:
    """The periods to produce: yesterday and today first (one plan, two days), then one day at a time."""

    def __init__(self, base: SimConfig, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 registry: Path | None = None, plan: Callable[[SimConfig], Simulation] = simulate) -> None:
        self.base = base
        self.now = now
        self.registry = registry
        self.plan = plan
        self.first_day = local_midnight(now()) - timedelta(days=1)
        self._first: Simulation | None = None

    def _planned(self, start: datetime, days: int) -> Simulation:
        sim = self.plan(replace(self.base, start=start, days=float(days)).checked())
        if self.registry is not None:
            sim.write_registry(self.registry)
        return sim

    def first(self) -> Simulation:
        """Yesterday and today (planned once; the sensor registry is written before any worker starts)."""
        if self._first is None:
            self._first = self._planned(self.first_day, 2)
        return self._first

    def periods(self) -> Iterator[Simulation]:
        """Yesterday + today, then each next day, planned when the previous one is used up."""
        yield self.first()
        start = self.first_day + timedelta(days=2)
        while True:
            yield self._planned(start, 1)
            start += timedelta(days=1)

    def messages(self, status: LiveStatus | None = None,
                 stop: threading.Event | None = None) -> Iterator[SimMessage]:
        for sim in self.periods():
            if stop is not None and stop.is_set():
                return
            if status is not None:
                status.days_planned += int(sim.config.days)
            yield from sim.messages()


def produce_live(settings: Settings, district: LiveDistrict, stop: threading.Event, status: LiveStatus,
                 producer: Any = None, sleep: Callable[[float], None] | None = None,
                 on_caught_up: Callable[[LiveStatus], None] | None = None) -> LiveStatus:
    """Produce the district's messages: those already due at full speed, the rest each at its time, until `stop`.

    Before waiting for a message's time the producer is flushed, so what is due is on the broker at once."""
    own = producer is None
    if producer is None:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024, retries=5,
                                 **settings.kafka_client_options())
    topics = settings.topics
    wait_for = sleep or (lambda s: stop.wait(s))
    failures: list[BaseException] = []
    try:
        for m in district.messages(status, stop):
            if stop.is_set():
                break
            while True:
                ahead = (m.at - district.now()).total_seconds()
                if ahead <= 0 or stop.is_set():
                    break
                producer.flush(timeout=30)
                if status.caught_up_at is None:
                    status.caught_up_at = district.now()
                    if on_caught_up is not None:
                        on_caught_up(status)
                wait_for(min(ahead, 1.0))
            if stop.is_set():
                break
            producer.send(getattr(topics, m.topic), key=m.key, value=m.value).add_errback(failures.append)
            status.sent += 1
            status.last_at = m.at
            if failures:
                raise RuntimeError(f"Kafka did not acknowledge a message: {failures[0]!r}")
        producer.flush(timeout=60)
    finally:
        if own:
            producer.close(timeout=10)
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.simulate.live",
                                description="a simulated district on the wall clock: yesterday and today so far "
                                            "at full speed, then in real time until Ctrl-C")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sensors", type=int, default=3000)
    p.add_argument("--registry", type=Path, default=None,
                   help="write the sensor registry here (the worker's CITYOPS_SENSORS) as each day is planned")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    stop = threading.Event()
    status = LiveStatus()
    district = LiveDistrict(SimConfig(seed=args.seed, sensors=args.sensors), registry=args.registry)

    def caught_up(s: LiveStatus) -> None:
        print(f"caught up with the wall clock after {s.sent:,} messages; now live", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        produce_live(settings, district, stop, status, on_caught_up=caught_up)
    except KeyboardInterrupt:
        stop.set()
    print(f"sent {status.sent:,} messages in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
