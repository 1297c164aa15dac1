"""Working through Picky's number filter: claim a channel's due checks, ask its connector, write
the answers (each queued for the event webhook in the same write).

A runner does this for its channel before claiming messages; pull channels (phones), which have
no runner, are answered by the dispatcher's renewal with their connector's default (validity).
Checks a connector cannot answer now (``CheckUnavailable``: a bridge down, a session not
connected) stay claimed until their lease ends and are tried again then, so none is lost when a
worker dies with checks in hand either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from pushgate.channels.base import Channel
from pushgate.core.checks import CheckUnavailable
from pushgate.store.base import Store

log = logging.getLogger("pushgate.dispatch")

#: Checks claimed per call; a bridge asks one number at a time, so a claim stays small.
CHECK_BATCH = 50


async def run_checks(store: Store, channel_of: Callable[[], Channel],
                     channel_ids: Sequence[int], lease_seconds: float) -> int:
    """One claim of due checks of ``channel_ids`` answered by ``channel_of()`` (built only
    when there are some); how many were answered."""
    checks = await store.claim_checks(channel_ids, CHECK_BATCH, time.time(), lease_seconds)
    if not checks:
        return 0
    channel = channel_of()
    try:
        answers = await channel.check_numbers([c.number for c in checks])
    except CheckUnavailable as exc:
        log.warning("channel %s: %d number checks wait (%s)", channel.spec.id, len(checks),
                    exc, extra={"channel_id": channel.spec.id})
        return 0
    by_number = {a.number: a for a in answers}
    written = [(c.id, by_number[c.number]) for c in checks if c.number in by_number]
    return await store.record_checks(written, time.time())
