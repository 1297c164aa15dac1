"""The ``Channel`` interface every connector implements, and the registry of kinds.

A channel turns one ``OutboundMessage`` into a provider call and says what happened as a
``SendResult``: a provider id, or an error marked retryable (rate limits, timeouts, 5xx) or
permanent (invalid number, opted out). Status callbacks from the provider come back through
``parse_callback`` as ``StatusUpdate``s. Channels never touch the store: the dispatcher records
what they return.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import OutboundMessage, SendResult, StatusUpdate


@dataclass(slots=True)
class ChannelStatus:
    connected: bool
    detail: str = ""


@dataclass(slots=True)
class CallbackRequest:
    """A provider's HTTP callback, as received (signature checks need the raw body)."""

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)


class Channel:
    """Base class of connectors. Subclasses set ``kind`` and implement ``send``."""

    kind: ClassVar[str] = ""
    # How many sends of this channel may be in flight at once (HTTP channels: >1).
    concurrency: ClassVar[int] = 1
    # Whether several workers may send for an unpaced channel at once (claims never overlap).
    # Connectors that hold a session (SMPP binds, phones) keep one sender: the lease holder.
    shareable: ClassVar[bool] = False
    # Seconds after submission at which the dispatcher asks ``simulate_delivery`` (sandbox).
    simulated_delivery_delay: float | None = None

    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec

    async def start(self) -> None:
        """Open connections (called when a worker takes the channel)."""

    async def stop(self) -> None:
        """Close connections (called when the worker lets the channel go)."""

    async def send(self, message: OutboundMessage) -> SendResult:
        raise NotImplementedError

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send several messages; connectors with a bulk endpoint override this. The default
        sends ``concurrency`` at a time. Rate limiting is the dispatcher's job, not this one's."""
        if self.concurrency <= 1:
            return [await self._safe_send(m) for m in messages]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message: OutboundMessage) -> SendResult:
            async with semaphore:
                return await self._safe_send(message)

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def _safe_send(self, message: OutboundMessage) -> SendResult:
        try:
            return await self.send(message)
        except Exception as exc:  # a connector bug must not lose the message: retry it
            return SendResult(message.id, ok=False, retryable=True, error_code="internal",
                              error_message=f"{type(exc).__name__}: {exc}")

    async def status(self) -> ChannelStatus:
        return ChannelStatus(connected=True)

    def parse_callback(self, request: CallbackRequest) -> list[StatusUpdate]:
        """Verify and parse a provider callback. Channels without callbacks accept none."""
        raise NotImplementedError(f"channel kind {self.kind!r} takes no callbacks")

    def simulate_delivery(self, message_ids: Sequence[int], now: float) -> list[StatusUpdate]:
        """Only for channels that fake delivery (sandbox)."""
        return []


_KINDS: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    _KINDS[cls.kind] = cls
    return cls


def channel_class(kind: str) -> type[Channel]:
    # Importing the connector modules registers them.
    from pushgate.channels import sandbox  # noqa: F401

    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {sorted(_KINDS)}") from None


def channel_for(spec: ChannelSpec) -> Channel:
    return channel_class(spec.kind)(spec)


def known_kinds() -> list[str]:
    from pushgate.channels import sandbox  # noqa: F401

    return sorted(_KINDS)
