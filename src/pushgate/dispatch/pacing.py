"""Pacing a channel: a token bucket for messages/s, plus a delay with random jitter.

Only the worker holding a channel's lease sends for it, so an in-process bucket is exact.
"""

from __future__ import annotations

import asyncio
import random
import time

_EPSILON = 1e-9


class Pacer:
    def __init__(self, rate_per_second: float, delay_ms: int = 0, jitter_ms: int = 0,
                 burst: float | None = None) -> None:
        self.rate = rate_per_second
        self.delay = delay_ms / 1000
        self.jitter = jitter_ms / 1000
        # A burst of one second's worth at most: the provider's limit is per second.
        self.capacity = burst if burst is not None else max(1.0, rate_per_second)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._last_send: float | None = None

    @property
    def limited(self) -> bool:
        return self.rate > 0 or self.delay > 0 or self.jitter > 0

    def batch_size(self, limit: int) -> int:
        """How many messages to claim at once: about a second's worth on a paced channel, so a
        high-priority message never waits behind a long claimed batch."""
        if self.delay or self.jitter:
            return 1
        if self.rate > 0:
            return max(1, min(limit, int(self.rate)))
        return limit

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` messages may go."""
        if self.delay or self.jitter:
            if self._last_send is not None:
                pause = self.delay + random.uniform(0, self.jitter)
                wait = self._last_send + pause - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last_send = time.monotonic()
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            # A hair of tolerance: the refill after a sleep of exactly the missing time can
            # land a rounding error short, which would otherwise sleep again for ~1e-14 s.
            if (self.tokens >= n - _EPSILON
                    or (n > self.capacity and self.tokens >= self.capacity - _EPSILON)):
                self.tokens -= n
                return
            await asyncio.sleep((min(n, self.capacity) - self.tokens) / self.rate)
