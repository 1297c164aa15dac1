"""What the dispatcher does around connectors: pausing a channel whose credentials the provider
refused, hourly caps, pull channels left to their devices, inline media handed over as signed
links, and receipts a connector reports on its own connection."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from tests.dispatch.test_dispatcher import counts, push_id_of, run_dispatcher, wait_for
from tests.store.contract.test_store_queue import queue

from pushgate.channels.base import Channel, register
from pushgate.channels.media import verify_media_signature
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, SendResult, StatusUpdate
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store

__all__ = ["run_dispatcher"]   # the fixture, imported for pytest


@register
class RefusingChannel(Channel):
    """Answers every send as a provider that no longer accepts the channel's token."""

    kind = "test-refusing"

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult.pause(message.id, "190", "token expired", retry_after=1)


@register
class RecordingChannel(Channel):
    """Accepts everything, remembers what it was given, and reports a receipt for each send
    through its sink, as a connector with its own connection (SMPP) does."""

    kind = "test-recording"
    shareable = True
    sent: ClassVar[list[OutboundMessage]] = []

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        type(self).sent.extend(messages)
        return [SendResult.sent(m.id, f"r{m.id}") for m in messages]

    async def send(self, message: OutboundMessage) -> SendResult:
        raise AssertionError("send_batch is used")


@register
class PullChannel(Channel):
    kind = "test-pull"
    pull = True


async def test_refused_credentials_pause_the_channel_and_keep_the_message(
        store: Store, make: Any, run_dispatcher: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, kind="test-refusing")
    result = await queue(store, channel, 1, time.time())
    run_dispatcher(worker_id="w-pause")

    async def paused() -> bool:
        spec = await store.get_channel(channel.id)
        return spec is not None and spec.paused

    await wait_for(paused, "the channel paused")
    spec = await store.get_channel(channel.id)
    assert spec is not None and spec.paused_reason == "190: token expired"
    message = await store.get_message(project.id, result.message_ids[0])
    assert message is not None
    assert message.state == "queued"


async def test_hourly_cap_holds_back_the_rest(store: Store, make: Any,
                                              run_dispatcher: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, kind="test-recording",
                                 config={"hourly_cap": 3})
    result = await queue(store, channel, 5, time.time())
    push_id = await push_id_of(store, project.id, result.message_ids[0])
    run_dispatcher(worker_id="w-cap")

    async def three_sent() -> bool:
        return (await counts(store, project.id, push_id)).get("submitted") == 3

    await wait_for(three_sent, "three messages sent")
    # Many idle rounds of the runner later (idle poll 20 ms), the cap still holds.
    for _ in range(10):
        await asyncio.sleep(0.05)
        assert await counts(store, project.id, push_id) == {"submitted": 3, "queued": 2}


async def test_pull_channels_get_no_sender(store: Store, make: Any,
                                           run_dispatcher: Any) -> None:
    project, _, _ = await make.project()
    pull = await make.channel(project.id, kind="test-pull")
    push = await make.channel(project.id, kind="sandbox", application=2)
    dispatcher = run_dispatcher(worker_id="w-pull")

    async def running() -> bool:
        return push.id in dispatcher.runners

    await wait_for(running, "the sandbox runner")
    assert pull.id not in dispatcher.runners


async def test_inline_media_goes_out_as_a_signed_link_and_receipts_come_back(
        store: Store, make: Any, run_dispatcher: Any) -> None:
    RecordingChannel.sent.clear()
    project, _, _ = await make.project()
    channel = await make.channel(project.id, kind="test-recording")
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    body = decode_push(json.dumps({"globalmessage": "see", "data": [{"number": "919876543210"}],
                                   "globalmedia_code": base64.b64encode(png).decode()}))
    accepted = await store.accept_push(project.id, channel,
                                       plan_push(body, channel, Limits()), time.time(), None)
    dispatcher = run_dispatcher(worker_id="w-media")

    async def sent() -> bool:
        return bool(RecordingChannel.sent)

    await wait_for(sent, "the message handed to the connector")
    link = urlsplit(RecordingChannel.sent[0].media_url or "")
    assert link.scheme == "http" and link.path.startswith("/media/")
    media_id = int(link.path.rsplit("/", 1)[1])
    params = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert verify_media_signature(dispatcher.env.secret_key, media_id, params["expires"],
                                  params["sig"], time.time())
    assert await store.get_media(media_id) == ("image/png", png)

    mid = accepted.message_ids[0]

    async def submitted() -> bool:
        message = await store.get_message(project.id, mid)
        return message is not None and message.state == "submitted"

    await wait_for(submitted, "the send recorded")
    runner = dispatcher.runners[channel.id][0]
    assert runner.channel.sink is not None
    await runner.channel.sink.updates([StatusUpdate(
        state=State.DELIVERED, at=time.time(), channel_id=channel.id, provider_id=f"r{mid}")])
    message = await store.get_message(project.id, mid)
    assert message is not None and message.state == "delivered"
