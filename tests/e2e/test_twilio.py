"""End to end over real processes: `pushgate serve` sends SMS and voice calls through the
Twilio fake on 127.0.0.1, the fake posts signed status callbacks to the channel's callback
URL, and every fate reaches the project's event webhook; a forged callback changes nothing."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from tests.e2e.harness import Harness, WebhookReceiver, indian_mobiles, project_balance
from tests.fakes.server import free_port, serve_app
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

pytestmark = pytest.mark.slow

SMS_PRICE = Decimal("0.01")
CALL_PRICE = Decimal("0.05")
CREDITS = Decimal("10")
OPTED_OUT = "919876500007"


def reports_by_msg(receiver: WebhookReceiver) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for report in receiver.accepted_reports():
        out.setdefault(report["msg_id"], []).append(report["status"])
    return out


async def test_sms_and_calls_through_twilio_report_every_fate(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    fake = FakeTwilio()
    fake.refuse("+" + OPTED_OUT, 21610)
    with serve_app(fake.app) as twilio_url:
        e2e.cli("migrate")
        project = e2e.cli_json("project", "create", "clinic", "--credits", str(CREDITS),
                               "--webhook", receiver.url)
        receiver.secret = project["webhook_secret"]
        base = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                "api_base_url": twilio_url, "from_number": "+15005550006"}
        sms = e2e.cli_json("channel", "add", "--project", "clinic", "--type", "twilio_sms",
                           "--application", "3", "--price", str(SMS_PRICE),
                           "--config", json.dumps(base))
        e2e.cli_json("channel", "add", "--project", "clinic", "--type", "twilio_voice",
                     "--application", "4", "--price", str(CALL_PRICE),
                     "--config", json.dumps({**base, "voice": "alice", "language": "en-IN"}))
        port = free_port()
        assert sms["callback_url"].endswith(f"/channels/{sms['id']}/callback")
        server = e2e.serve(port=port, env=e2e.env(
            PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", PUSHGATE_IDLE_POLL_SECONDS="0.1"))
        numbers = indian_mobiles(10)
        long_hindi = "आपका बिल " * 12          # UCS-2, more than 70 units: 2 parts
        answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "3", "globalmessage": "Bill due 5 Dec",
            "data": [{"number": n} for n in numbers[:-1]]
            + [{"number": numbers[-1], "message": long_hindi}]}).json()
        assert answer["status"] == 100, answer
        charged = Decimal(answer["credit_total"])
        assert charged == SMS_PRICE * 11            # nine single parts, one of two
        sms_ids = {e["number"]: e["msg_id"] for e in answer["data"]}

        # Every send reaches the fake except the opted-out number's, refused there.
        e2e.wait_until(lambda: len(fake.messages) == 9, 20, "nine SMS at the fake",
                       describe=lambda: str(e2e.state_counts()))
        bodies = {r.value("To"): r.value("Body") for r in fake.requests
                  if r.path.endswith("/Messages.json")}
        assert bodies["+" + numbers[-1]] == long_hindi
        sids = {m.to: sid for sid, m in fake.messages.items()}
        # Forged first: nothing may change.
        forged = await fake.message_status(sids["+" + numbers[0]], "undelivered", 30003,
                                           signature="wrong")
        assert forged.status_code == 403
        assert (await fake.message_status(sids["+" + numbers[0]], "failed",
                                          signature="missing")).status_code == 403
        for number, sid in sids.items():
            final = "undelivered" if number == "+" + numbers[1] else "delivered"
            responses = await fake.deliver(sid, final, error_code=30005)
            assert [r.status_code for r in responses] == [200, 200]
        # A repeated callback is harmless.
        await fake.message_status(sids["+" + numbers[2]], "delivered")

        voice = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "4",
            "globalmessage": "Your appointment is at 10 <today> & on time",
            "data": [{"number": numbers[0]}, {"number": numbers[1]}]}).json()
        assert voice["status"] == 100, voice
        call_ids = {e["number"]: e["msg_id"] for e in voice["data"]}
        e2e.wait_until(lambda: len(fake.calls) == 2, 20, "two calls at the fake")
        twiml = [r.value("Twiml") or "" for r in fake.requests if r.path.endswith("/Calls.json")]
        assert all("&lt;today&gt; &amp; on time</Say>" in t for t in twiml), twiml
        calls = {c.to: sid for sid, c in fake.calls.items()}
        await fake.call_status(calls["+" + numbers[0]], "completed")
        await fake.call_status(calls["+" + numbers[1]], "busy")

        expected: dict[str, int] = {sms_ids[n]: 1 for n in numbers}
        expected[sms_ids[numbers[1]]] = 2            # undelivered
        expected[sms_ids[OPTED_OUT]] = 5             # refused by Twilio: refunded
        expected[call_ids[numbers[0]]] = 1
        expected[call_ids[numbers[1]]] = 2           # busy

        def all_reported() -> bool:
            got = reports_by_msg(receiver)
            return all(got.get(mid, [None])[-1] == status for mid, status in expected.items())

        e2e.wait_until(all_reported, 30, "every fate at the event webhook",
                       describe=lambda: json.dumps(reports_by_msg(receiver)))
        got = reports_by_msg(receiver)
        assert 2 not in got[sms_ids[numbers[0]]]     # the forged "undelivered" never counted
        refused = [r for r in receiver.accepted_reports() if r["msg_id"] == sms_ids[OPTED_OUT]]
        assert refused[-1]["error_code"] == "21610"
        assert project_balance(e2e, "clinic") == (
            CREDITS - charged + SMS_PRICE - CALL_PRICE * 2)
        assert AUTH_TOKEN not in server.output()     # secrets are never logged
