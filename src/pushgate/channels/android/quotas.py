"""What one fetch may hand a phone: its channel's per-minute/hour/day limits, in-flight cap,
lease and stickiness, with a fresh random delay before each message (``PhoneSettings``)."""

from __future__ import annotations

import random

from pushgate.channels.android.channel import PhoneSettings
from pushgate.core.devices import DeviceQuota


def device_quota(settings: PhoneSettings) -> DeviceQuota:
    """What one fetch may hand a phone, with fresh random delays for its messages."""
    return DeviceQuota(
        per_minute=settings.per_minute, per_hour=settings.per_hour, per_day=settings.per_day,
        per_fetch=settings.per_fetch, max_in_flight=settings.max_in_flight,
        lease_seconds=settings.lease_seconds, offline_after=settings.offline_after_seconds,
        sticky_seconds=settings.sticky_seconds,
        delays=tuple(random.uniform(settings.min_delay_seconds, settings.max_delay_seconds)
                     for _ in range(settings.per_fetch)))
