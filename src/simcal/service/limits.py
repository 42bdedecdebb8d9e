"""Per-key request rate limit: a token bucket per API key (``rate`` requests per second, bursts of ``burst``)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit: need rate > 0 and burst >= 1, got rate {rate}, burst {burst}")
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key name -> (tokens, when counted)
        self._lock = threading.Lock()

    def acquire(self, name: str) -> float:
        """Take one token for ``name``: 0.0 when allowed, else the seconds until a token is available."""
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds (RFC 9110): round up, never 0."""
    return str(max(1, math.ceil(wait_s)))
