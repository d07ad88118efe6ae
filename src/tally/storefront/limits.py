"""Request rate limits for the storefront API: a token bucket per key, in this process's memory.

Each key (a client address, a shopper) may make `per_minute` requests a minute on average and
bursts of up to `burst`. The buckets live in memory, per process: behind several web processes
each counts on its own, so the effective limit is the sum of theirs. Idle keys are forgotten
when the table grows past `max_keys`, so a flood of new addresses cannot exhaust memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets by key; `take` answers None (go ahead) or the seconds to wait."""

    def __init__(
        self,
        *,
        per_minute: int,
        burst: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled says nothing a new one would not.
        self._buckets = {
            key: (tokens, at)
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate < self.burst
        }
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

    def take(self, key: str) -> int | None:
        """Spend one request of `key`'s allowance; when none is left, the whole seconds to wait."""
        if self.rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return max(1, math.ceil((1 - tokens) / self.rate))
            if key not in self._buckets and len(self._buckets) >= self.max_keys:
                self._forget_full_buckets(now)
            self._buckets[key] = (tokens - 1, now)
            return None
