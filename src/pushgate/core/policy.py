"""Dispatch policy both stores and the dispatcher apply: retry back-off, a worker's share of
the channels, and how long the stores keep waiting rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Seconds a status update for an unknown provider id is kept waiting for its id.
EARLY_UPDATE_TTL = 86_400.0
#: Seconds before the validity sweep looks again at a push whose messages past their validity
#: are still being sent (one may come back queued). Until then the push goes to the back of
#: the sweep's order, so pushes stuck in flight cannot hold up the others; a message that
#: comes back queued meanwhile is never claimed, only expired later.
EXPIRY_RECHECK_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with jitter for retryable send errors."""

    max_attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next try after ``attempts`` tries: half fixed, half random, so
        the retries of a burst spread out but never come back at once; never sooner than the
        provider's ``retry_after``."""
        delay = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        return max(retry_after or 0.0, delay / 2 + random.uniform(0, delay / 2))


def fair_share(active_channels: int, live_workers: int) -> int:
    """How many channels one worker may lease: an even split, rounded up."""
    return -(-active_channels // max(1, live_workers))
