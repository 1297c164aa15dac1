"""End to end over real processes, with the production defaults for outbound targets
(PUSHGATE_ALLOW_PRIVATE_MEDIA and PUSHGATE_ALLOW_PRIVATE_WEBHOOKS false):

- media URLs at loopback, metadata and other private addresses are refused in their entry
  (212, credit 0), never charged, never handed to the WhatsApp bridge (WAHA fake);
- a webhook on 127.0.0.1 is refused by the CLI, and when one is stored anyway (set while
  allowed), the deliverer refuses it at send time: the receiver gets nothing, the reports stay
  in the outbox for their retries."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from decimal import Decimal

import httpx
import pytest

from tests.e2e.harness import (
    Harness,
    WebhookReceiver,
    indian_mobiles,
    project_balance,
    pushgate_command,
)
from tests.fakes.server import free_port, serve_app
from tests.fakes.waha import FakeWaha

pytestmark = pytest.mark.slow

DEFAULTS = {"PUSHGATE_ALLOW_PRIVATE_MEDIA": "false", "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS": "false"}
PRIVATE_MEDIA = ["http://127.0.0.1/x.jpg", "http://169.254.169.254/latest/meta-data/x.jpg",
                 "http://2130706433/x.jpg", "http://[::ffff:10.0.0.1]/x.jpg",
                 "http://a@0x7f.1./x.jpg"]
PUBLIC_MEDIA = "https://93.184.216.34/ok.jpg"   # an IP literal: no DNS in the test


async def test_private_media_is_refused_and_never_reaches_the_bridge(e2e: Harness) -> None:
    fake = FakeWaha()
    with serve_app(fake.app) as waha_url:
        e2e.cli("migrate")
        project = e2e.cli_json("project", "create", "school", "--credits", "10")
        e2e.cli_json(
            "channel", "add", "--project", "school", "--type", "waha", "--application", "10",
            "--price", "0.5", "--delay-ms", "0", "--jitter-ms", "0",
            "--config", json.dumps({"base_url": waha_url, "api_key": fake.api_key,
                                    "check_numbers": False}))
        port = free_port()
        server = e2e.serve(port=port, env=e2e.env(
            PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", PUSHGATE_IDLE_POLL_SECONDS="0.1",
            **DEFAULTS))
        numbers = indian_mobiles(len(PRIVATE_MEDIA) + 2)
        data = [{"number": n, "message": "report card", "media": url}
                for n, url in zip(numbers, PRIVATE_MEDIA, strict=False)]
        data += [{"number": numbers[-2], "message": "report card", "media": PUBLIC_MEDIA},
                 {"number": numbers[-1], "message": "text only"}]
        answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "10", "data": data}).json()
        assert answer["status"] == 100, answer
        refused = answer["data"][:len(PRIVATE_MEDIA)]
        assert [(e["status"], e["credit"], "msg_id" in e) for e in refused] == [
            (212, "0", False)] * len(PRIVATE_MEDIA)
        assert (answer["accepted"], answer["credit_total"]) == (2, "1")

        e2e.wait_until(lambda: len(fake.sent) >= 2, 30, "the two accepted messages sent")
        await asyncio.sleep(1.0)   # anything else would have gone out by now
        assert len(fake.sent) == 2
        sent_files = [s.body.get("file", {}).get("url") for s in fake.sent]
        assert sorted(map(str, sent_files)) == sorted([PUBLIC_MEDIA, "None"])
        assert project_balance(e2e, "school") == Decimal("9")

        # A push whose every entry names private media is refused whole, nothing charged.
        response = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "10",
            "globalmedia": "http://169.254.169.254/latest/user-data",
            "data": [{"number": numbers[0]}]})
        assert (response.status_code, response.json()["status"]) == (422, 212)
        assert project_balance(e2e, "school") == Decimal("9")
        assert e2e.query("SELECT count(*) FROM messages")[0][0] == 2


def test_webhook_on_loopback_is_refused_when_set_and_when_sent(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    e2e.cli("migrate")
    refused = subprocess.run(
        pushgate_command("project", "create", "shop", "--webhook", receiver.url),
        env=e2e.env(**DEFAULTS), cwd=e2e.dir, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS" in refused.stderr, refused.stderr

    # Stored while allowed (or its name resolved elsewhere then): the deliverer checks again.
    project = e2e.cli_json("project", "create", "shop", "--credits", "10",
                           "--webhook", receiver.url)
    receiver.secret = project["webhook_secret"]
    e2e.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                 "--application", "1", "--price", "0.5")
    server = e2e.serve(env=e2e.env(PUSHGATE_IDLE_POLL_SECONDS="0.1", **DEFAULTS))
    answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
        "token": project["token"], "application": "1",
        "data": [{"number": n, "message": "hello"} for n in indian_mobiles(3)]}).json()
    assert answer["status"] == 100, answer

    def tried() -> bool:
        rows = e2e.query("SELECT count(*) FROM outbox WHERE attempts >= 1")
        return rows[0][0] > 0

    e2e.wait_until(tried, 30, "a delivery attempt of the reports")
    time.sleep(0.5)
    assert receiver.all_posts() == []
    assert e2e.query("SELECT count(*) FROM outbox WHERE dead")[0][0] == 0   # retried later
    log = server.output()
    assert "non-public address 127.0.0.1" in log, log
