"""Per-token rate limit of the bank API: a token bucket per API token, in memory.

Each token may make ``rate_per_s`` requests per second on average with bursts of ``burst``;
beyond that the API answers 429 with ``Retry-After``. One process counts its own requests:
behind a load balancer with N cloud processes a token gets up to N times the rate (put the
limit in the balancer for an exact global figure). Gateways are not limited here: ingest is
signed per batch and has its own back-pressure (429 when its queue is full).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBuckets"]


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self.limited = 0  # requests refused, for /metrics

    def take(self, key: int) -> float:
        """0.0 if the request may go, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                if len(self._buckets) >= self.max_keys and key not in self._buckets:
                    self._buckets.clear()  # bounded memory; a cleared bucket starts full
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            self.limited += 1
            return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
