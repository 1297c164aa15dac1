"""End to end over real processes with the fake SMSC: 2,000 mixed GSM-7 / UCS-2 / multi-part
SMS pushed to `pushgate serve`, sent over a bind_transceiver, receipts flowing back on the bind
to the project's event webhook; the SMSC throttles now and then and drops the connection
mid-drain. Nothing is lost, nothing is sent twice beyond the in-flight submits the drop cut
off (each recorded as a retry), and the credit charged equals the parts sent."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pushgate.core.segments import count_segments
from tests.e2e.harness import Harness, WebhookReceiver, indian_mobiles, project_balance
from tests.fakes.smsc import FakeSmsc

pytestmark = pytest.mark.slow

COUNT = 2000
PRICE = Decimal("0.01")
CREDITS = Decimal("100")
TEXTS = (
    "Your OTP is {i:06d}. Do not share it.",
    "Dear customer {i}, your electricity bill of Rs 1,240 is due on 5 Dec. Pay online or at "
    "any counter before the due date to avoid a late fee. Thank you for being with us. {{ok}}",
    "प्रिय ग्राहक {i}, आपका बिल तैयार है।",
    "Уважаемый клиент {i}, ваш счёт за декабрь готов. Оплатите до пятого числа, пожалуйста, "
    "чтобы избежать пени. Спасибо!",
)


class SmscThread:
    """The fake SMSC on its own event loop, so the test's blocking calls never stall it."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.smsc = FakeSmsc(**options)
        self.thread = threading.Thread(target=self.loop.run_forever, name="smsc", daemon=True)

    def __enter__(self) -> SmscThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.smsc.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.smsc.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, fn: Any) -> None:
        self.loop.call_soon_threadsafe(fn)


@pytest.fixture
def smsc() -> Iterator[SmscThread]:
    with SmscThread(receipt_delay=0.05, throttle_every=397) as running:
        yield running


def test_two_thousand_sms_with_throttling_and_a_dropped_bind(
        e2e: Harness, receiver: WebhookReceiver, smsc: SmscThread) -> None:
    fake = smsc.smsc
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "bank", "--credits", str(CREDITS),
                           "--webhook", receiver.url)
    receiver.secret = project["webhook_secret"]
    e2e.cli_json("channel", "add", "--project", "bank", "--type", "smpp", "--application", "3",
                 "--price", str(PRICE), "--rate", "600", "--config", json.dumps({
                     "host": "127.0.0.1", "port": fake.port, "system_id": fake.system_id,
                     "password": fake.password, "source_addr": "PUSHGATE", "window": 10,
                     "response_timeout_seconds": 2, "rebind_min_seconds": 0.2,
                     "throttle_backoff_seconds": 0.05, "enquire_link_seconds": 5}))
    server = e2e.serve(env=e2e.env(PUSHGATE_IDLE_POLL_SECONDS="0.1",
                                   PUSHGATE_RETRY_BASE_SECONDS="0.2"))
    numbers = indian_mobiles(COUNT)
    texts = {n: TEXTS[i % len(TEXTS)].format(i=i) for i, n in enumerate(numbers)}
    answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=60, json={
        "token": project["token"], "application": "3",
        "data": [{"number": n, "message": t} for n, t in texts.items()]}).json()
    assert answer["status"] == 100 and answer["accepted"] == COUNT, answer.get("message")
    parts = sum(count_segments(t).segments for t in texts.values())
    assert parts > COUNT                        # multi-part texts are in the mix
    assert Decimal(answer["credit_total"]) == PRICE * parts

    e2e.wait_until(lambda: fake.accepted_count > parts // 3, 60, "a third of the parts sent")
    smsc.call(fake.drop)                        # the network drops the bind mid-drain

    ids = {e["msg_id"] for e in answer["data"]}
    e2e.wait_until(lambda: receiver.delivered_ids() >= ids, 120,
                   "every message delivered at the event webhook",
                   describe=lambda: str(e2e.state_counts()))
    assert e2e.state_counts() == {"delivered": COUNT}
    assert len(fake.bind_attempts) >= 2         # it bound again after the drop
    assert any(s.status == 0x58 for s in fake.submits)   # throttled, and still delivered
    # Every text arrived whole; parts sent twice are only the drop's in-flight submits,
    # whose messages carry a recorded retry.
    assert all(texts[n] in fake.texts_to(n) for n in numbers)
    number_of = {int(e["msg_id"]): e["number"] for e in answer["data"]}
    retried = {number_of[r[0]] for r in e2e.query(
        "SELECT DISTINCT message_id FROM message_events"
        " WHERE state = 'queued' AND detail LIKE 'retry in%'")}
    resent_parts = sum(count_segments(texts[n]).segments for n in retried)
    assert fake.duplicate_parts() <= resent_parts
    assert project_balance(e2e, "bank") == CREDITS - PRICE * parts
