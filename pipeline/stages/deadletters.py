"""The worker's guard against a bad upstream deploy: when too large a share of recent input is dead-lettered,
`DeadLetterLimit` raises `DeadLetterLimitExceeded` and the worker stops loudly (pipeline.runtime.ingest)."""

from __future__ import annotations

from collections import deque
from typing import Any


class DeadLetterLimitExceeded(RuntimeError):
    """Too large a share of recent input was invalid: most likely a bad deploy upstream. Stop loudly."""


class DeadLetterLimit:
    """Stops the worker when more than `max_ratio` of the last `window` messages were dead-lettered."""

    def __init__(self, max_ratio: float = 0.5, window: int = 2000, min_messages: int = 500) -> None:
        self.max_ratio, self.window, self.min_messages = max_ratio, window, min_messages
        self._runs: deque[list[Any]] = deque()     # [bad?, count] runs of the last `window` messages, oldest first
        self._len = 0
        self._bad = 0

    def record(self, ok: int, bad: int) -> None:
        """A batch's `ok` accepted then `bad` dead-lettered messages (in runs: cheap for batches of thousands)."""
        runs = self._runs
        for flag, n in ((False, ok), (True, bad)):
            if n <= 0:
                continue
            if runs and runs[-1][0] is flag:
                runs[-1][1] += n
            else:
                runs.append([flag, n])
            self._len += n
            self._bad += n if flag else 0
        while self._len > self.window:
            oldest = runs[0]
            drop = min(oldest[1], self._len - self.window)
            oldest[1] -= drop
            self._len -= drop
            self._bad -= drop if oldest[0] else 0
            if not oldest[1]:
                runs.popleft()
        if self.max_ratio < 1.0 and self._len >= self.min_messages:
            ratio = self._bad / self._len
            if ratio > self.max_ratio:
                raise DeadLetterLimitExceeded(
                    f"{ratio:.0%} of the last {self._len} messages were dead-lettered "
                    f"(limit {self.max_ratio:.0%}); stopping so a bad upstream deploy is noticed"
                )
