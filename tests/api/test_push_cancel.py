"""``POST /api/v2/push-cancel``: a push's messages not yet handed to a channel cancelled and
refunded, end to end through the HTTP API (issue 19.3)."""

from __future__ import annotations

import time
from typing import Any

from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits

NUMBERS = ["919876543210", "14155552671", "919812345678", "919812345679"]
PRICE = parse_credits("0.005")


async def _setup(app_client, make, webhook_url: str | None = None):
    project, token, _ = await make.project(credits="10", webhook_url=webhook_url)
    spec = await make.channel(project.id, application=1, price="0.005")
    # No dispatcher: what is queued stays queued until cancelled.
    client, gateway = await app_client(run_workers=False)
    return client, gateway, project, token, spec


async def _push(client, token: str) -> dict[str, Any]:
    body = (await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hello",
        "data": [{"number": n} for n in NUMBERS]})).json()
    assert body["status"] == 100, body
    return body


async def _balance(gateway, project_id: int) -> int:
    project = await gateway.store.get_project(project_id)
    return project.balance_micro


async def test_cancel_a_queued_push_refunds_every_message(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make,
                                                      "http://hooks.test/pushgate")
    before = await _balance(gateway, project.id)
    accepted = await _push(client, token)
    assert await _balance(gateway, project.id) == before - 4 * PRICE

    answer = (await client.post("/api/v2/push-cancel",
                                json={"token": token, "push_id": accepted["push_id"]})).json()
    assert answer == {"status": 100, "message": "Success", "push_id": int(accepted["push_id"]),
                      "cancelled": 4, "refunded": "0.02", "in_flight": 0, "sent": 0,
                      "already_ended": 0}
    assert await _balance(gateway, project.id) == before

    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": accepted["push_id"]})).json()
    assert [item["status"] for item in report["data"]] == [5] * 4
    assert {item["state"] for item in report["data"]} == {"cancelled"}
    assert {item["error_message"] for item in report["data"]} == {"push cancelled by its project"}
    # The project's event webhook is told of each.
    reports = [item.report for batch in await gateway.store.claim_outbox(
        "t", 100, time.time(), 30.0) for item in batch.items]
    assert sorted(r.message_id for r in reports if r.state == "cancelled") == sorted(
        int(item["msg_id"]) for item in report["data"])

    # Again: nothing left, a success with 0.
    again = (await client.post("/api/v2/push-cancel",
                               json={"token": token, "push_id": accepted["push_id"]})).json()
    assert (again["status"], again["cancelled"], again["refunded"], again["already_ended"]) == (
        100, 0, "0", 4)


async def test_cancel_after_some_were_sent_takes_only_the_rest(app_client, make) -> None:
    client, gateway, project, token, spec = await _setup(app_client, make)
    before = await _balance(gateway, project.id)
    accepted = await _push(client, token)
    now = time.time()
    claimed = await gateway.store.claim_messages(spec.id, "w", 2, now, 30.0)
    await gateway.store.record_outcomes("w", [SendResult.sent(claimed[0].id, "p-1")], now,
                                        RetryPolicy())

    answer = (await client.post("/api/v2/push-cancel", headers={
        "authorization": f"Bearer {token}"}, json={"push_id": accepted["push_id"]})).json()
    assert (answer["cancelled"], answer["refunded"], answer["in_flight"], answer["sent"]) == (
        2, "0.01", 1, 1)
    assert await _balance(gateway, project.id) == before - 2 * PRICE
    push = (await client.get(f"/api/v2/pushes/{accepted['push_id']}",
                             headers={"authorization": f"Bearer {token}"})).json()
    assert push["data"]["counts"] == {"submitted": 1, "sending": 1, "cancelled": 2}


async def test_unknown_or_another_projects_push_is_not_found(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    accepted = await _push(client, token)
    _, stranger, _ = await make.project()
    for who, push_id in ((stranger, accepted["push_id"]), (token, 999999)):
        response = await client.post("/api/v2/push-cancel",
                                     json={"token": who, "push_id": push_id})
        assert response.status_code == 404
        assert response.json()["status"] == 404
    pushed = await gateway.store.get_push(project.id, int(accepted["push_id"]))
    assert pushed.counts == {"queued": 4}
    # pushgate's own endpoint: not at Picky's older base path.
    old = await client.post("/app/api/v2/push-cancel",
                            json={"token": token, "push_id": accepted["push_id"]})
    assert old.json()["status"] == 404
    bad = await client.post("/api/v2/push-cancel", json={"token": token, "push_id": "x"})
    assert bad.json()["status"] == 406
