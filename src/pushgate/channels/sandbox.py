"""The sandbox channel: accepts everything, "delivers" after a delay, fails on purpose.

For demos, tests and Picky's sandbox mode. Config keys (``channel add --config``):

- ``delivery_delay`` (seconds, default 0): time from submission to the delivered report. At 0
  (and no ``read_ratio``) the send's own outcome says delivered, recorded in the same write as
  the submission; otherwise a simulated receipt follows, the path a real provider's takes.
- ``failure_ratio`` (0..1, default 0): share of sends refused permanently (refunded, status 5).
- ``transient_ratio`` (0..1, default 0): share of sends refused with a retryable error.
- ``read_ratio`` (0..1, default 0): share of delivered messages also reported read.
- ``seed``: makes the random choices repeatable.

The inbox is the project's sandbox messages themselves (``GET /api/v2/sandbox/inbox``): the
store already holds what was sent, so nothing is kept twice. Users write back through
``POST /api/v2/sandbox/inbound``: ``user_writes`` turns what they wrote into the callback
result a real channel's provider callback comes to, which the API records the same way.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from typing import ClassVar

from pushgate.channels.base import CallbackResult, Channel, ChannelEnv, register
from pushgate.channels.config import ChannelConfig
from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import NumberCheck, by_sandbox_rule
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate
from pushgate.core.sandbox import SandboxUserMessage


class SandboxConfig(ChannelConfig, kw_only=True):
    """The sandbox's knobs (module docstring); numbers given as strings are taken, as always."""

    lax: ClassVar[bool] = True
    delivery_delay: float = 0.0
    failure_ratio: float = 0.0
    transient_ratio: float = 0.0
    read_ratio: float = 0.0
    seed: int | str | None = None


@register
class SandboxChannel(Channel):
    """Accepts everything, "delivers" after a delay, fails on purpose (demos, tests)."""

    kind = "sandbox"
    config_model = SandboxConfig
    shareable = True

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        config = self.stored_config()
        assert isinstance(config, SandboxConfig)
        self.simulated_delivery_delay = config.delivery_delay
        self.failure_ratio = config.failure_ratio
        self.transient_ratio = config.transient_ratio
        self.read_ratio = config.read_ratio
        self.random = random.Random(config.seed)
        # Delivered at once: no receipt pass (the runner's simulation loop) is needed.
        self.delivered_on_send = self.simulated_delivery_delay == 0 and not self.read_ratio
        if self.delivered_on_send:
            self.simulated_delivery_delay = None

    def _result(self, message: OutboundMessage) -> SendResult:
        roll = self.random.random()
        if roll < self.failure_ratio:
            return SendResult.failed(message.id, "sandbox-failed",
                                     "sandbox: simulated permanent failure")
        if roll < self.failure_ratio + self.transient_ratio:
            return SendResult.retry(message.id, "sandbox-busy",
                                    "sandbox: simulated transient failure")
        if self.delivered_on_send:
            return SendResult.delivered(message.id, f"sandbox-{message.id}")
        return SendResult.sent(message.id, f"sandbox-{message.id}")

    async def send(self, message: OutboundMessage) -> SendResult:
        return self._result(message)

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return [self._result(m) for m in messages]

    async def check_numbers(self, numbers: Sequence[str]) -> list[NumberCheck]:
        """The documented rule (``core.checks.sandbox_on_whatsapp``): a number ending in an
        even digit is on WhatsApp."""
        return by_sandbox_rule(list(numbers))

    def simulate_delivery(self, message_ids: Sequence[int], now: float) -> list[StatusUpdate]:
        updates = [StatusUpdate(state=State.DELIVERED, at=now, message_id=mid)
                   for mid in message_ids]
        if self.read_ratio:
            updates += [StatusUpdate(state=State.READ, at=now, message_id=mid)
                        for mid in message_ids if self.random.random() < self.read_ratio]
        return updates

    def user_writes(self, message: SandboxUserMessage, at: float) -> CallbackResult:
        """A user's message arriving on this channel, as a provider callback would bring it:
        Picky's type 2 when it carries media, else 1. The provider id is new each time (a
        real provider's is unique per message), so each call is a message of its own."""
        return CallbackResult(inbound=[InboundMessage(
            channel_id=self.spec.id, number=message.number, text=message.text,
            provider_id=f"sandbox-in-{secrets.token_hex(8)}", at=at,
            type=2 if message.media_url else 1, media_url=message.media_url,
            name=message.name, raw={"source": "sandbox/inbound"})])
