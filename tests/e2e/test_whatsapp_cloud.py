"""End to end over real processes with the Graph API fake: a 500-message dynamic push and a
template push through `pushgate serve`, Meta's signed status webhooks flowing back through the
channel's callback URL to the project's event webhook; 130429 answered with back-off and then
success; the per-recipient pair limit measured; an undeliverable number refunded; a forged
webhook refused with nothing changed."""

from __future__ import annotations

import json
from decimal import Decimal
from itertools import pairwise

import httpx
import pytest

from tests.e2e.harness import Harness, WebhookReceiver, indian_mobiles, project_balance
from tests.fakes.graph_api import GraphFake
from tests.fakes.server import free_port, serve_app

pytestmark = pytest.mark.slow

COUNT = 500
PAIR_INTERVAL = 0.5
PRICE = Decimal("0.01")
VERIFY_TOKEN = "verify-me"


def last_status(receiver: WebhookReceiver) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in receiver.accepted_reports():
        out[report["msg_id"]] = report["status"]
    return out


async def test_cloud_api_push_template_pacing_and_statuses(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/channels/1/callback"
    # The fake does not enforce the pair limit itself, so the spacing measured below is the
    # connector's own pacing, not the fake's refusals.
    fake = GraphFake(pair_interval=None, webhook_url=callback,
                     auto_statuses=("sent", "delivered", "read"))
    undeliverable = indian_mobiles(1, start=900)[0]
    fake.undeliverable.add(undeliverable)
    fake.throttle(3)   # Meta's 130429 for the first three sends
    with serve_app(fake.app) as graph_url:
        e2e.cli("migrate")
        project = e2e.cli_json("project", "create", "utility", "--credits", "20",
                               "--webhook", receiver.url)
        receiver.secret = project["webhook_secret"]
        channel = e2e.cli_json("channel", "add", "--project", "utility", "--type",
                               "whatsapp_cloud", "--application", "101", "--price", str(PRICE),
                               "--config", json.dumps({
                                   "phone_number_id": fake.phone_number_id,
                                   "access_token": fake.access_token,
                                   "app_secret": fake.app_secret, "verify_token": VERIFY_TOKEN,
                                   "graph_base_url": graph_url, "graph_version": "v21.0",
                                   "pair_interval_seconds": PAIR_INTERVAL}))
        assert channel["id"] == 1 and channel["rate_per_second"] == 80.0
        server = e2e.serve(port=port, env=e2e.env(
            PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", PUSHGATE_IDLE_POLL_SECONDS="0.1",
            PUSHGATE_RETRY_BASE_SECONDS="0.2"))
        handshake = await fake.averify(callback, VERIFY_TOKEN, challenge="8812")
        assert (handshake.status_code, handshake.text) == (200, "8812")
        assert (await fake.averify(callback, "wrong")).status_code == 403

        numbers = indian_mobiles(COUNT)
        repeat = numbers[0]
        entries = [{"number": n, "message": f"Dear customer {i}, your bill is due"}
                   for i, n in enumerate(numbers)]
        entries += [{"number": repeat, "message": f"Reminder {k}"} for k in range(2)]
        entries.append({"number": undeliverable, "message": "never arrives"})
        answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=60, json={
            "token": project["token"], "application": "101", "data": entries}).json()
        assert answer["status"] == 100 and answer["accepted"] == COUNT + 3, answer["message"]
        template = httpx.post(f"{server.base_url}/api/v2/push", timeout=60, json={
            "token": project["token"], "application": "101", "template_id": "bill_due",
            "language": "en", "template_globalmessage": ["Asha", "1,200"],
            "data": [{"number": numbers[1]},
                     {"number": numbers[2], "template_message": ["Ravi", "800"]}]}).json()
        assert template["status"] == 100, template
        ids = [e["msg_id"] for e in answer["data"] + template["data"]]
        refused_id = answer["data"][-1]["msg_id"]

        def settled() -> bool:
            last = last_status(receiver)
            return all(last.get(mid) in (3, 5) for mid in ids)

        e2e.wait_until(settled, 90, "every message read or refunded at the event webhook",
                       describe=lambda: str(e2e.state_counts()))
        last = last_status(receiver)
        assert last[refused_id] == 5
        assert sorted(last[mid] for mid in ids).count(3) == len(ids) - 1
        refund = [r for r in receiver.accepted_reports() if r["msg_id"] == refused_id]
        assert refund[-1]["error_code"] == "131026"

        # Each message reached Meta once; the throttled ones on a later try.
        tos = [m.to for m in fake.sent]
        assert len(tos) == len(ids) - 1
        assert tos.count(repeat) == 3 and tos.count(numbers[1]) == 2
        assert e2e.query("SELECT count(*) FROM message_events WHERE detail LIKE ?",
                         "%130429%")[0][0] == 3
        # The pair limit: three messages to one number, at least the interval apart.
        times = sorted(m.at for m in fake.sends_to(repeat))
        assert len(times) == 3
        assert all(b - a >= PAIR_INTERVAL * 0.95 for a, b in pairwise(times))
        # The template went as one, with its values in order.
        sent_templates = [m.payload["template"] for m in fake.sent if m.type == "template"]
        assert sorted(
            [p["text"] for c in t["components"] if c["type"] == "body" for p in c["parameters"]]
            for t in sent_templates) == [["Asha", "1,200"], ["Ravi", "800"]]

        # A forged "failed" webhook for a read message: refused, nothing changes.
        wamid = fake.sends_to(numbers[3])[0].wamid
        forged = fake.delivery(fake.status_payload(wamid, "failed", numbers[3],
                                                   error_code=131026), signature="invalid")
        [response] = await fake.apost(callback, [forged])
        assert response.status_code in (401, 403)
        assert e2e.state_counts() == {"read": len(ids) - 1, "refunded": 1}
        assert project_balance(e2e, "utility") == Decimal("20") - PRICE * (len(ids) - 1)


async def test_a_message_read_after_a_130429_reports_no_stale_error(
        e2e: Harness, receiver: WebhookReceiver) -> None:
    """Errors belong to the attempt that had them: Meta's 130429 on the first try, then the
    send goes through and the message is read. The report says read (3) with no error; the
    message's history still shows the throttled attempt."""
    port = free_port()
    callback = f"http://127.0.0.1:{port}/channels/1/callback"
    fake = GraphFake(pair_interval=None, webhook_url=callback,
                     auto_statuses=("sent", "delivered", "read"))
    fake.throttle(1)
    with serve_app(fake.app) as graph_url:
        e2e.cli("migrate")
        project = e2e.cli_json("project", "create", "utility", "--credits", "1",
                               "--webhook", receiver.url)
        receiver.secret = project["webhook_secret"]
        e2e.cli_json("channel", "add", "--project", "utility", "--type", "whatsapp_cloud",
                     "--application", "101", "--price", str(PRICE), "--config", json.dumps({
                         "phone_number_id": fake.phone_number_id,
                         "access_token": fake.access_token, "app_secret": fake.app_secret,
                         "verify_token": VERIFY_TOKEN, "graph_base_url": graph_url,
                         "graph_version": "v21.0"}))
        server = e2e.serve(port=port, env=e2e.env(
            PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}", PUSHGATE_IDLE_POLL_SECONDS="0.1",
            PUSHGATE_RETRY_BASE_SECONDS="0.2"))
        answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
            "token": project["token"], "application": "101",
            "data": [{"number": indian_mobiles(1)[0], "message": "Your bill is due"}]}).json()
        assert answer["status"] == 100, answer
        push_id, mid = answer["push_id"], answer["data"][0]["msg_id"]
        e2e.wait_until(lambda: last_status(receiver).get(mid) == 3, 30,
                       "the message read at the event webhook",
                       describe=lambda: str(e2e.state_counts()))
        assert len(fake.sent) == 1

        report = httpx.post(f"{server.base_url}/api/v2/delivery-report", timeout=30, json={
            "token": project["token"], "push_id": push_id}).json()
        [item] = report["data"]
        assert (item["status"], item["error_code"], item["error_message"]) == (3, None, "")
        hooks = [r for r in receiver.accepted_reports() if r["msg_id"] == mid]
        assert sorted(r["status"] for r in hooks) == [1, 3, 4]
        assert all((r["error_code"], r["error_message"]) == (None, "") for r in hooks)

        detail = httpx.get(f"{server.base_url}/api/v2/messages/{mid}", timeout=30,
                           headers={"Authorization": f"Bearer {project['token']}"}).json()
        message = detail["data"]
        assert (message["state"], message["error_code"], message["error_message"]) == (
            "read", None, None)
        retries = [e for e in message["events"]
                   if e["state"] == "queued" and "130429" in (e["detail"] or "")]
        assert len(retries) == 1, message["events"]
        assert [e["state"] for e in message["events"]][-3:] == ["submitted", "delivered", "read"]
