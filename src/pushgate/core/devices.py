"""Phones of pull channels as the stores and the device API see them: a paired device, the
quota of one fetch, the messages a fetch hands out, and what a device's report refers to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Hand-outs are kept this long: a day for the per-day limit, the rest for late reports.
DEVICE_HISTORY_SECONDS = 7 * 86_400.0


def device_worker(device_id: str) -> str:
    """The lease holder name of a device's claims (``messages.leased_by``)."""
    return f"device:{device_id}"


@dataclass(slots=True)
class Device:
    """A phone paired with a pull channel."""

    id: str
    channel_id: int
    project_id: int
    name: str
    created_at: float
    last_seen_at: float | None = None
    revoked_at: float | None = None
    push_token: str | None = None
    user_agent: str = ""
    # What the device said about itself (SIM cards, battery, network), if anything.
    health: dict[str, Any] | None = None
    # No new messages before this time (random delay, or a full limit window).
    ready_at: float = 0.0
    # No new messages before this time (Android refused to send more).
    paused_until: float = 0.0
    # Event streams opened before this time are closed (``restart``).
    reconnect_at: float = 0.0
    # Messages it holds under a live lease (``list_devices`` only).
    in_flight: int = 0

    def online(self, now: float, offline_after: float) -> bool:
        return (self.revoked_at is None and self.last_seen_at is not None
                and self.last_seen_at >= now - offline_after)


@dataclass(frozen=True, slots=True)
class DeviceQuota:
    """What one fetch may hand a device."""

    # Messages per rolling minute, hour and day (0: no limit).
    per_minute: int
    per_hour: int
    per_day: int
    per_fetch: int
    # A device holding this many messages under a live lease gets no more.
    max_in_flight: int
    lease_seconds: float
    # Devices seen within this many seconds are online (they keep their recipients).
    offline_after: float
    sticky_seconds: float
    # The random pause after each message handed out now, in order (at least ``per_fetch``).
    delays: tuple[float, ...]

    def windows(self) -> list[tuple[float, int]]:
        """(seconds, limit) of each limited window."""
        return [(seconds, limit) for seconds, limit in
                ((60.0, self.per_minute), (3600.0, self.per_hour), (86_400.0, self.per_day))
                if limit > 0]

    def allowance(self, in_flight: int, handed: Sequence[int]) -> int:
        """New messages allowed now, given the live leases held and the hand-outs counted in
        each of ``windows()``."""
        room = [self.per_fetch, self.max_in_flight - in_flight]
        room += [limit - count for (_s, limit), count in zip(self.windows(), handed,
                                                               strict=True)]
        return max(0, min(room))


@dataclass(slots=True)
class DeviceMessage:
    """A message as handed to a device."""

    id: int
    number: str
    text: str
    priority: int
    created_at: float
    expires_at: float | None
    possible_resend: bool = False


@dataclass(slots=True)
class DeviceClaim:
    # Unacknowledged ones handed before, then new ones; priority then id.
    messages: list[DeviceMessage]
    # How many of ``messages`` were handed out by this claim.
    new: int
    # No new messages for the device before this time.
    ready_at: float


@dataclass(slots=True)
class ReportedMessage:
    # The message's lifecycle state (``State`` value).
    state: str
    # The device holds its lease (``record_outcomes`` as ``device_worker(id)`` applies).
    held: bool


#: The app's states of a message it holds queued: it keeps the message (its lease is renewed)
#: while it waits out its own delays.
HOLDING_STATES = ("Pending", "Processed")


def sorted_claim(claim: DeviceClaim) -> DeviceClaim:
    """The claim with its messages in the order a device sends them: priority, then id."""
    claim.messages.sort(key=lambda m: (-m.priority, m.id))
    return claim


def handout_detail(device_id: str, attempt: int, possible_resend: bool) -> str:
    """The ``sending`` event's text of a message handed to a device."""
    return (f"device {device_id}, attempt {attempt}"
            + (": possible re-send, previous lease expired" if possible_resend else ""))


def ready_after_handout(quota: DeviceQuota, now: float, handed: int) -> float:
    """When a device that was just handed ``handed`` messages may have more: the random
    pause after each."""
    return now + sum(quota.delays[:handed])


def leases_to_renew(reports: Sequence[tuple[int, str, float]],
                    known: dict[int, ReportedMessage]) -> list[int]:
    """The messages whose lease a device's reports renew: those it holds and says it has
    queued (``HOLDING_STATES``), in id order."""
    return sorted({mid for mid, state, _at in reports
                   if state in HOLDING_STATES and mid in known and known[mid].held})
