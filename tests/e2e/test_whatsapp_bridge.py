"""End to end over real processes with the WAHA fake: the bridge session goes down mid-drain,
messages wait (never fail) until it is back, each is sent once; signed acks (repeated, out of
order) end every message at read on the event webhook; a forged ack changes nothing; a user's
reply reaches the project's incoming webhook."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest

from tests.e2e.harness import Harness, WebhookReceiver, indian_mobiles, project_balance
from tests.fakes.server import free_port, serve_app
from tests.fakes.waha import FakeWaha

pytestmark = pytest.mark.slow

COUNT = 40
HMAC_KEY = "waha-webhook-key"


def chat_numbers(fake: FakeWaha) -> list[str]:
    return [sent.chat_id.split("@")[0] for sent in fake.sent]


async def test_session_down_mid_drain_then_acks_to_the_event_webhook(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    fake = FakeWaha()
    fake.webhook_hmac_key = HMAC_KEY
    with serve_app(fake.app) as waha_url:
        e2e.cli("migrate")
        project = e2e.cli_json("project", "create", "school", "--credits", "10",
                               "--webhook", receiver.url)
        receiver.secret = project["webhook_secret"]
        channel = e2e.cli_json(
            "channel", "add", "--project", "school", "--type", "waha", "--application", "10",
            "--price", "0.01", "--rate", "20", "--delay-ms", "0", "--jitter-ms", "0",
            "--config", json.dumps({"base_url": waha_url, "api_key": fake.api_key,
                                    "webhook_hmac_key": HMAC_KEY, "check_numbers": False,
                                    "session_cache_seconds": 0.1,
                                    "session_retry_seconds": 0.3}))
        port = free_port()
        server = e2e.serve(port=port, env=e2e.env(
            PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", PUSHGATE_IDLE_POLL_SECONDS="0.1"))
        callback = f"http://127.0.0.1:{port}/channels/{channel['id']}/callback"
        numbers = indian_mobiles(COUNT)
        answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "10",
            "data": [{"number": n, "message": f"Absent today: roll {i}"}
                     for i, n in enumerate(numbers)]}).json()
        assert answer["status"] == 100, answer
        ids = {e["number"]: e["msg_id"] for e in answer["data"]}

        e2e.wait_until(lambda: len(fake.sent) >= 10, 20, "ten messages sent")
        fake.session_status = "STARTING"
        # What was already past the session check may still land; then nothing more.
        await asyncio.sleep(1.0)
        held = len(fake.sent)
        await asyncio.sleep(1.5)
        assert len(fake.sent) == held < COUNT
        counts = e2e.state_counts()
        assert "failed" not in counts and "refunded" not in counts, counts
        waiting = e2e.query("SELECT count(*) FROM message_events WHERE detail LIKE ?",
                            "%not an attempt%session%")[0][0]
        assert waiting > 0

        fake.session_status = "WORKING"
        e2e.wait_until(lambda: len(fake.sent) == COUNT, 30, "every message sent",
                       describe=lambda: str(e2e.state_counts()))
        await asyncio.sleep(0.5)
        assert sorted(chat_numbers(fake)) == sorted(numbers)       # each exactly once
        assert e2e.query("SELECT max(attempts) FROM messages")[0][0] == 1

        # A forged ack is refused and changes nothing.
        fake.webhook_hmac_key = "not-the-key"
        assert await fake.emit(callback, [fake.ack_event(fake.sent[0], 3)]) == [401]
        fake.webhook_hmac_key = HMAC_KEY
        acks = [fake.ack_event(sent, level) for sent in fake.sent for level in (2, 3)]
        statuses = await fake.emit(callback, acks, duplicate=True, reorder=True)
        assert set(statuses) == {200}
        await fake.emit(callback, [fake.message_event(f"{numbers[0]}@c.us", "Ravi is sick")])

        def all_read() -> bool:
            last: dict[str, int] = {}
            for report in receiver.accepted_reports():
                last[report["msg_id"]] = report["status"]
            return all(last.get(mid) == 3 for mid in ids.values())

        e2e.wait_until(all_read, 30, "every message read at the event webhook")
        assert e2e.state_counts() == {"read": COUNT}
        # Read arrived before delivered for each message: still read, never moved back.
        assert all(r["status"] in (1, 3, 4) for r in receiver.accepted_reports())
        assert project_balance(e2e, "school") == Decimal("10") - COUNT * Decimal("0.01")
        inbound = e2e.query("SELECT number, body FROM inbound_messages")
        assert inbound == [(numbers[0], "Ravi is sick")]
