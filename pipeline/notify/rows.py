"""The notifier's record in ClickHouse, written beside the deliveries, never in their way.

`RowWriter` is a thread that stores `NotificationRow`s through the sink (`ClickHouseSink.write_rows`, the only
ClickHouse writer) every `interval_s`. Deliveries never wait for it: a gas leak's message must not wait for the
archive. While ClickHouse is down the sink retries with capped backoff and the rows wait here (at most
`max_rows`; past that the oldest are dropped and counted in `dropped`, and a restart writes them again: the
notifier re-stores every attempt of the deliveries it restores, and the table keeps one row per key).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from pipeline.notify.ledger import NotificationRow

log = logging.getLogger("cityops.notify")


class RowWriter:
    """Background writer of notification rows (see module docstring). `sink` is a ClickHouseSink (anything with
    `write_rows(spec, rows)` and `stop()`); None keeps no record (tests of the delivery alone)."""

    def __init__(self, sink: Any, interval_s: float = 0.5, max_rows: int = 200_000) -> None:
        self.sink = sink
        self.interval_s = interval_s
        self._rows: deque[NotificationRow] = deque(maxlen=max_rows)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="notify-rows", daemon=True)
        if sink is not None:
            self._thread.start()

    def add(self, rows: Iterable[NotificationRow]) -> None:
        if self.sink is None:
            return
        with self._lock:
            for row in rows:
                if len(self._rows) == self._rows.maxlen:
                    self.dropped += 1
                self._rows.append(row)

    def _take(self) -> list[NotificationRow]:
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        return rows

    def _run(self) -> None:
        from pipeline.sink.sink import SinkStopped
        from pipeline.sink.tables import NOTIFICATIONS

        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            rows = self._take()
            if not rows:
                continue
            try:
                self.sink.write_rows(NOTIFICATIONS, rows)
                self.written += len(rows)
            except SinkStopped:
                return
            except Exception as err:   # refused data: logged, not retried (the same rows would fail again)
                log.error("notify: %d notification rows not stored: %s", len(rows), err)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Write what waits now (at shutdown), giving up after `timeout_s`."""
        if self.sink is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        rows = self._take()
        if rows:
            done = threading.Thread(target=self._last, args=(rows,), daemon=True)
            done.start()
            done.join(timeout_s)
        self.sink.stop()

    def _last(self, rows: list[NotificationRow]) -> None:
        from pipeline.sink.tables import NOTIFICATIONS

        try:
            self.sink.write_rows(NOTIFICATIONS, rows)
            self.written += len(rows)
        except Exception as err:      # a restart re-stores them from the changelog
            log.warning("notify: %d notification rows not stored at shutdown: %s", len(rows), err)
