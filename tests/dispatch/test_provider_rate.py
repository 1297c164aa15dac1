"""Provider rate limits hold where the provider counts them: messages go through the real
dispatcher and connectors, over HTTP, to the providers' fakes, which note when each request
arrives; no one-second window of those arrivals may hold more than the channel's rate.

Each channel sends a first burst the moment a worker takes it (idle until then: the first
second is where a full token bucket let twice the rate through), then sits idle past the
window and gets a second burst. The assertion is a count of arrivals per window, exhaustive
over the windows, not a timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.dispatch.test_dispatcher import run_dispatcher, wait_for
from tests.dispatch.test_pacing import most_in_any_window
from tests.fakes.graph_api import GraphFake
from tests.fakes.server import serve_app
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

from pushgate.core.channels import ChannelSpec
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store

__all__ = ["run_dispatcher"]   # the fixture, imported for pytest

# Low, so three bursts' worth take a few seconds.
RATE = 20
# Longer than the limiter's window: the channel is idle again before the second burst.
IDLE_SECONDS = 1.2


async def accept(store: Store, channel: ChannelSpec, data: list[dict[str, Any]]) -> None:
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    await store.accept_push(channel.project_id, channel, plan, time.time(), None)


def entries(count: int, start: int, audio_every: int = 0) -> list[dict[str, Any]]:
    """``count`` messages to distinct numbers; every ``audio_every``-th an audio with a text,
    which WhatsApp takes as two messages (two requests at the provider)."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + count):
        entry: dict[str, Any] = {"number": f"91987654{i:04d}", "message": f"bill {i} is due"}
        if audio_every and i % audio_every == 0:
            entry["media"] = f"https://media.example.com/reminder-{i}.mp3"
        out.append(entry)
    return out


async def two_bursts(store: Store, channel: ChannelSpec, run_dispatcher: Any,
                     arrivals: Any, requests_per_burst: int,
                     burst: Any) -> list[float]:
    """Queue the first burst, start a worker, wait for its requests at the fake; idle; queue
    the second; wait; return every arrival time."""
    await accept(store, channel, burst(0))
    dispatcher = run_dispatcher(worker_id="w-rate")

    async def arrived(count: int) -> bool:
        return len(arrivals()) >= count

    await wait_for(lambda: arrived(requests_per_burst), "the first burst at the provider")
    await asyncio.sleep(IDLE_SECONDS)
    await accept(store, channel, burst(1))
    dispatcher.wake(channel.id)
    await wait_for(lambda: arrived(2 * requests_per_burst), "the second burst at the provider")
    return list(arrivals())


async def test_whatsapp_cloud_holds_its_rate_at_the_graph_api(
        store: Store, make: Any, run_dispatcher: Any) -> None:
    """3 × the rate a burst, one message in five an audio with its text (two Graph sends,
    both counted by Meta): no second at the fake holds more than the rate."""
    fake = GraphFake(pair_interval=None)
    count, audio_every = 3 * RATE, 5
    requests_per_burst = count + count // audio_every
    with serve_app(fake.app) as graph_url:
        project, _, _ = await make.project(credits="100")
        channel = await make.channel(
            project.id, application=101, kind="whatsapp_cloud", rate_per_second=RATE,
            config={"phone_number_id": fake.phone_number_id,
                    "access_token": fake.access_token, "app_secret": fake.app_secret,
                    "verify_token": "verify-me", "graph_base_url": graph_url,
                    "pair_interval_seconds": 0})
        arrivals = await two_bursts(
            store, channel, run_dispatcher, lambda: [r.at for r in fake.posts],
            requests_per_burst, lambda k: entries(count, k * count, audio_every))
    assert len(fake.sent) == 2 * requests_per_burst   # every one accepted: none throttled
    assert most_in_any_window(arrivals, 1.0) <= RATE


async def test_twilio_holds_its_rate_at_the_api(
        store: Store, make: Any, run_dispatcher: Any) -> None:
    fake = FakeTwilio()
    count = 3 * RATE
    with serve_app(fake.app) as twilio_url:
        project, _, _ = await make.project(credits="100")
        channel = await make.channel(
            project.id, application=3, kind="twilio_sms", rate_per_second=RATE,
            config={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                    "api_base_url": twilio_url, "from_number": "+15005550006"})

        def sends() -> list[float]:
            return [r.at for r in fake.requests if r.path.endswith("/Messages.json")]

        arrivals = await two_bursts(store, channel, run_dispatcher, sends, count,
                                    lambda k: entries(count, k * count))
    assert len(fake.messages) == 2 * count
    assert most_in_any_window(arrivals, 1.0) <= RATE
