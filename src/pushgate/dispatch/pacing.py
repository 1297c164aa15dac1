"""Pacing a channel: a rate limiter that holds in every one-second window, a delay with random
jitter, and caps.

The rate rule is the provider's: in ANY one-second window at most ``rate`` requests reach it
(WhatsApp Cloud answers 130429 beyond 80/s, Twilio queues or refuses, an SMSC throttles). A
token bucket of one second's worth does not hold it: full after an idle spell, it lets a
second's worth go at once and refills while they go, so about twice the rate leaves in the
first second. ``Pacer`` instead grants a permit only when (a) fewer than ``limit`` permits were
granted in the last ``window`` seconds (a log of the last ``limit`` grant times) and (b) the
permit is due on an even spacing of ``window / limit`` seconds, with a ``burst`` of them
allowed back to back (a sender that fell behind catches up; each still counts in the window).
(a) alone is the guarantee; (b) keeps the sends smooth rather than a window's worth at once.

The window is ``1 s + WINDOW_MARGIN_SECONDS``: a request reaches the provider a little after
its permit (the event loop, the network), and not always equally late; the margin keeps two
permits one window apart from landing in the same provider second. It costs its share of the
rate (80/s gives ~76/s), the price of never being throttled.

Only the worker holding a channel's lease sends for it, so one in-process limiter per channel
is exact; a lease hand-over is covered in ``ChannelRunner`` (``dispatch/worker.py``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from asyncio import Lock
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# See the module docstring: how much later than its permit a request may reach the provider
# relative to the one ``limit`` permits before it, without a provider second holding too many.
WINDOW_MARGIN_SECONDS = 0.05
# A permit due within this much is granted now: a sleep of exactly the missing time can wake
# a rounding error short, which would otherwise sleep again for ~1e-14 s.
_EPSILON = 1e-9


class Pacer:
    """``rate`` permits per second holding in every window (see the module docstring), plus
    ``delay_ms`` + random ``jitter_ms`` between two ``acquire`` calls (anti-ban pauses).

    A ``rate`` of 1 or more allows ``floor(rate)`` per second (a provider second holds whole
    requests); a rate below 1 allows one per ``1 / rate`` seconds. ``burst`` is how many may go
    back to back (default half a window's worth, at least 1; never more than a window's worth:
    they count in it). Half, because a paced batch ends with a pause while its last answers
    come back and its outcomes are recorded, and the next batch must catch up on it or the
    channel falls short of its rate (bench/http_channel.py with a slow Graph fake: a tenth fell
    well short, half keeps up; docs/benchmarks.md)."""

    def __init__(self, rate_per_second: float, delay_ms: int = 0, jitter_ms: int = 0,
                 burst: float | None = None, *,
                 margin_seconds: float = WINDOW_MARGIN_SECONDS) -> None:
        self.rate = rate_per_second
        self.delay = delay_ms / 1000
        self.jitter = jitter_ms / 1000
        self._last_send: float | None = None
        if rate_per_second >= 1:
            self.limit = int(math.floor(rate_per_second))
            provider_window = 1.0
        else:
            self.limit = 1
            provider_window = 1.0 / rate_per_second if rate_per_second > 0 else 1.0
        self.window = provider_window + margin_seconds
        self.interval = self.window / self.limit
        if burst is None:
            burst = math.ceil(self.limit / 2)
        self.burst = max(1, min(self.limit, int(burst)))
        # Grant times of the last ``limit`` permits, oldest first.
        self._log: deque[float] = deque(maxlen=self.limit)
        # When the next permit is due on the even spacing (GCRA's theoretical arrival time).
        self._due = -math.inf
        # Waiters take their turn in order (asyncio's lock is first come, first served); a
        # caller finding nobody queued and a permit free takes it without the lock.
        self._turn = Lock()
        self._queued = 0
        # Permits granted so far (for tests and diagnostics).
        self.granted = 0

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
        """Wait until ``n`` requests may go now: the pause since the previous call (delay and
        jitter), then ``n`` permits of the rate at once (see ``permit``)."""
        await self.pause()
        await self.permit(n)

    async def pause(self) -> None:
        """The delay plus random jitter since the previous call, if the channel has one."""
        if not (self.delay or self.jitter):
            return
        if self._last_send is not None:
            pause = self.delay + random.uniform(0, self.jitter)
            wait = self._last_send + pause - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self._last_send = time.monotonic()

    async def permit(self, n: int = 1) -> None:
        """Wait until ``n`` requests may reach the provider now, and count them as sent.

        More than ``limit`` at once can never fit a window: they go when the window is empty
        and fill it, so the next permit waits a whole window; a caller that wants the rule to
        hold takes one permit per request."""
        if self.rate <= 0 or n <= 0:
            return
        now = time.monotonic()
        if not self._queued and max(self._waits(n, now)) <= _EPSILON:
            self._grant(n, now, window_bound=False)
            return
        self._queued += 1
        window_bound = False
        try:
            async with self._turn:
                while True:
                    now = time.monotonic()
                    spacing, window = self._waits(n, now)
                    if max(spacing, window) <= _EPSILON:
                        self._grant(n, now, window_bound)
                        return
                    window_bound = window_bound or window > spacing
                    await asyncio.sleep(max(spacing, window))
        finally:
            self._queued -= 1

    def _waits(self, n: int, now: float) -> tuple[float, float]:
        """Seconds until ``n`` permits may be granted together (<= 0: now): by the even
        spacing, and by the window."""
        # Even spacing: the first of them due, less the burst allowance.
        spacing = self._due - (self.burst - 1) * self.interval - now
        window = -math.inf
        over = min(len(self._log), len(self._log) + n - self.limit)
        if over > 0:
            # The ``over`` oldest grants must have left the window (all of them for more
            # than a window's worth).
            window = self._log[over - 1] + self.window - now
        return spacing, window

    def _grant(self, n: int, now: float, window_bound: bool) -> None:
        self._log.extend([now] * n)
        if window_bound:
            # A sender that waited for the window, not one that fell behind: no burst credit
            # (a pause the window imposed must not let a burst through at its end, which the
            # window would stop again: sends would come in bursts and pauses, and a priority
            # message would wait out the pauses); the next permit is a spacing later.
            self._due = max(self._due, now + (self.burst - 1) * self.interval)
        self._due = max(self._due, now) + n * self.interval
        self.granted += n

    def note_sends(self, times: Iterable[float]) -> None:
        """Count requests that reached the provider at ``times`` (``time.monotonic()``) without
        this pacer's permits, e.g. a previous holder's: later permits leave room for them in
        their window and keep the spacing after the last."""
        if self.rate <= 0:
            return
        merged = sorted([*self._log, *times])
        if merged:
            self._log = deque(merged[-self.limit:], maxlen=self.limit)
            self._due = max(self._due, merged[-1] + self.interval)

    def assume_window_full(self) -> None:
        """Act as if a window's worth of requests just went out: the next permit comes a window
        from now (a new holder that cannot tell what its predecessor sent)."""
        self.note_sends([time.monotonic()] * self.limit)

    def take_over(self, previous: Pacer) -> None:
        """Count what ``previous`` (the same channel's pacer until now) let through."""
        self.note_sends(previous._log)


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
