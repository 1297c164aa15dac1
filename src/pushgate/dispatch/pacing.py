"""Pacing a channel: a token bucket for messages/s, a delay with random jitter, and caps.

Only the worker holding a channel's lease sends for it, so an in-process bucket is exact.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class SendCaps:
    """Hourly and daily caps on a channel's sends, with an optional warm-up ramp for a new
    number (WhatsApp bans numbers that go from nothing to thousands a day). Channel config
    keys: ``hourly_cap``, ``daily_cap``, ``warmup_first_day`` (sends allowed on day one),
    ``warmup_growth`` (factor per day, default 1.5), ``warmup_started_at`` (unix time; set
    when the channel is added). 0 or absent = no cap."""

    hourly: int = 0
    daily: int = 0
    warmup_first_day: int = 0
    warmup_growth: float = 1.5
    warmup_started_at: float = 0.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SendCaps:
        return cls(hourly=int(config.get("hourly_cap") or 0),
                   daily=int(config.get("daily_cap") or 0),
                   warmup_first_day=int(config.get("warmup_first_day") or 0),
                   warmup_growth=float(config.get("warmup_growth") or 1.5),
                   warmup_started_at=float(config.get("warmup_started_at") or 0.0))

    @property
    def active(self) -> bool:
        return bool(self.hourly or self.daily or self.warmup_first_day)

    def daily_limit(self, now: float) -> int:
        """Today's cap: the daily cap, or lower while the warm-up ramp is below it."""
        limit = self.daily
        if self.warmup_first_day:
            days = max(0, int((now - self.warmup_started_at) // 86_400))
            ramp = int(self.warmup_first_day * self.warmup_growth ** min(days, 60))
            limit = min(limit, ramp) if limit else ramp
        return limit

    def allowance(self, sent_last_hour: int, sent_last_day: int, now: float) -> int | None:
        """How many more may go now; None when uncapped."""
        if not self.active:
            return None
        left: list[int] = []
        if self.hourly:
            left.append(self.hourly - sent_last_hour)
        daily = self.daily_limit(now)
        if daily:
            left.append(daily - sent_last_day)
        return max(0, min(left)) if left else None
