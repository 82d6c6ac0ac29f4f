"""Per-client rate limiting for the ingest API: a token bucket per client key.

A client may send `burst` requests at once and `rate` per second sustained. `take(key)` answers 0 when the request
may go ahead, else the seconds until it may (the `Retry-After` of a 429). Buckets idle long enough to be full
again are forgotten, so memory stays bounded by the number of recently active clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate: float = 5.0
    burst: float = 20.0
    clock: Callable[[], float] = time.monotonic
    max_clients: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)   # key -> (tokens, last time)

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket; 0.0 when allowed, else seconds to wait (nothing spent)."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_clients:
                self._forget_idle(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
