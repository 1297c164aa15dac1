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


# --- a claim's decisions ------------------------------------------------------------------------
# A claim runs in four steps, each store querying and writing, this module deciding: the device
# is gated (``claim_start``), its quota measured (``DeviceQuota.allowance``, or when a full
# window frees up: ``full_windows`` and ``ready_when_windows_free``), the store picks up to the
# allowance of messages (leases that ran out first, then queued ones past sticky recipients: a
# locking query), and ``plan_handout`` says what the hand-out writes and answers.


def claim_start(pending: list[DeviceMessage], ready_at: float, paused_until: float,
                channel_paused: bool | None, now: float) -> tuple[DeviceClaim, bool]:
    """The claim holding the device's unacknowledged messages, and whether it may be handed
    new ones now: not while its channel is paused or gone (``channel_paused`` None), nor
    before the device is ready again (its pauses, or Android refusing to send more)."""
    claim = DeviceClaim(pending, 0, max(ready_at, paused_until))
    return claim, channel_paused is False and now >= claim.ready_at


def full_windows(quota: DeviceQuota, handed: Sequence[int]) -> list[tuple[float, int]]:
    """(seconds, offset) of each limit window that is full, given the hand-outs counted in
    each of ``quota.windows()``: it has room again ``seconds`` after its hand-out at
    ``offset``, oldest first, within the window."""
    return [(seconds, count - limit)
            for (seconds, limit), count in zip(quota.windows(), handed, strict=True)
            if count >= limit]


def ready_when_windows_free(now: float, oldest: Sequence[tuple[float, float | None]]) -> float:
    """When every full window has room again, given each one's (seconds, hand-out found at
    its ``full_windows`` offset); ``now`` if none is full."""
    return max([now] + [at + seconds for seconds, at in oldest if at is not None])


@dataclass(frozen=True, slots=True)
class HandedMessage:
    """A message a claim just took for a device, with its attempt count after the take."""

    message: DeviceMessage
    attempts: int


@dataclass(slots=True)
class Handout:
    """What a store writes for the messages handed to a device, and the claim it answers."""

    # ``sending`` event (message id, detail) of each: fresh ones, then possible re-sends; by id.
    events: list[tuple[int, str]]
    # Their ids, in order: the device's hand-out history rows.
    message_ids: list[int]
    # Their recipients, each once, in order: the device is now theirs (sticky recipients).
    # One order lets concurrent claims of two devices lock recipient rows alike.
    numbers: list[str]
    # The device's new ``ready_at``; None when nothing was handed out (it stays).
    ready_at: float | None
    claim: DeviceClaim


def plan_handout(device_id: str, quota: DeviceQuota, now: float, claim: DeviceClaim,
                 handed: Sequence[HandedMessage]) -> Handout:
    """The hand-out of ``handed`` to a device whose claim so far is ``claim`` (its
    unacknowledged messages): what to record, and the claim in sending order."""
    ordered = sorted(handed, key=lambda h: (h.message.possible_resend, h.message.id))
    ready_at = ready_after_handout(quota, now, len(handed)) if handed else None
    if ready_at is not None:
        claim.ready_at = ready_at
    claim.new = len(handed)
    claim.messages += [h.message for h in handed]
    return Handout(
        events=[(h.message.id, handout_detail(device_id, h.attempts, h.message.possible_resend))
                for h in ordered],
        message_ids=sorted(h.message.id for h in handed),
        numbers=sorted({h.message.number for h in handed}),
        ready_at=ready_at, claim=sorted_claim(claim))
