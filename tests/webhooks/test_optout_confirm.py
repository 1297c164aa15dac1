"""webhooks/optouts.py: the confirmation of a user's STOP goes once (first handling of the
event only), to the number that just opted out; event 4's body."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson

from pushgate.core.models import InboundMessage
from pushgate.core.optouts import KeywordSettings
from pushgate.webhooks.optouts import confirm, optouts_body

USER = "919876543210"


async def test_the_confirmation_goes_once_to_the_opted_out_number(store: Any, make: Any,
                                                                  query: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    await store.set_keyword_settings(project.id, KeywordSettings(stop_reply="Bye"))
    now = time.time()
    await store.record_inbound([InboundMessage(channel.id, USER, "stop", "p1", now)], now)
    (event,) = await store.claim_optout_events(10, now + 1, 60)
    assert event.reply == "Bye" and event.webhook_url == ""
    sent = await confirm(store, event, None)
    assert sent is not None and len(sent.message_ids) == 1
    assert await confirm(store, dataclasses.replace(event, attempts=1), None) is None
    assert query("SELECT number, body FROM messages") == [(USER, "Bye")]
    body = orjson.loads(optouts_body(project.id, [event]))
    assert body["event_id"] == 4 and body["data"][0]["status"] == "opted_out"
