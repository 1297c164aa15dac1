"""End to end with fake "SMS Gateway for Android" phones: the gateway served over real HTTP on
127.0.0.1 (dispatcher and webhook deliverer running), phones that register, listen on the event
stream, fetch and report as the app does, and a signature-checking receiver for the project's
event webhook."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from pushgate.api.gateway import create_app
from pushgate.config import Settings
from pushgate.core.pricing import parse_credits
from tests.e2e.harness import Harness, WebhookReceiver, free_port, indian_mobiles
from tests.fakes.android_phone import (
    LIMIT_EXCEEDED,
    FakeAndroidPhone,
    PhoneBehaviour,
    app_error,
)

pytestmark = pytest.mark.slow

PRIVATE_TOKEN = "e2e-private-token-0123456789abcdef"
PREFIX = "/api/mobile/v1"
PRICE = "0.01"
# Test-sized phone settings: no per-minute/hour limits unless a test sets them, short polls.
FAST = {"private_token": PRIVATE_TOKEN, "per_minute": 0, "per_hour": 0, "per_day": 0,
        "min_delay_seconds": 0, "max_delay_seconds": 0, "events_poll_seconds": 0.05,
        "keepalive_seconds": 0.3}


@contextlib.contextmanager
def gateway_server(db_url: str) -> Iterator[str]:
    """The whole gateway (API, dispatcher, webhook deliverer) under uvicorn in a thread."""
    settings = Settings(database_url=db_url, idle_poll_seconds=0.05,
                        webhook_retry_schedule="0.2,0.5,1",
                        allow_private_webhooks=True)   # the receiver is on 127.0.0.1
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, lifespan="on",
        log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str,
                   describe: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    if not condition():
        pytest.fail(f"timed out after {timeout}s waiting for {what}; {describe()}")


async def set_up(make, receiver: WebhookReceiver, **config: Any) -> tuple[Any, str, Any]:
    project, token, secret = await make.project(credits="100", webhook_url=receiver.url)
    receiver.secret = secret
    spec = await make.channel(project.id, application=3, kind="android", price=PRICE,
                              config={**FAST, **config})
    return project, token, spec


async def push(base: str, token: str, entries: list[dict[str, str]]) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post("/api/v2/push", json={
            "token": token, "application": "3", "globalmessage": "", "data": entries})
    body = response.json()
    assert body["status"] == 100 and body["accepted"] == len(entries), body
    return [entry["msg_id"] for entry in body["data"]]


async def picky(base: str, route: str, token: str, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(f"/api/v2/{route}", json={"token": token, **fields})
    return response.json()


def reports_by_message(receiver: WebhookReceiver) -> dict[str, list[tuple[int, str]]]:
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for report in receiver.accepted_reports():
        seen[report["msg_id"]].append((report["status"], report["state"]))
    return seen


def finished(receiver: WebhookReceiver) -> set[str]:
    """Messages whose final report arrived (delivered, or credit returned)."""
    return {mid for mid, reports in reports_by_message(receiver).items()
            if any(status in (1, 5) for status, _state in reports)}


async def test_three_hundred_messages_spread_over_two_phones_within_their_limits(
        db_url: str, make, query, store, receiver: WebhookReceiver) -> None:
    project, token, spec = await set_up(
        make, receiver, per_day=150, per_fetch=10, max_in_flight=10, min_delay_seconds=0.01,
        max_delay_seconds=0.02, lease_seconds=30)
    numbers = indian_mobiles(300)
    entries = [{"number": n, "message": f"Hello #{i}, your code is {i * 7919 % 10000:04d}",
                "reference_number": f"ref-{i}"} for i, n in enumerate(numbers)]

    def fails(number: str) -> str | None:
        return "RESULT_ERROR_GENERIC_FAILURE" if number.endswith("7") else None

    with gateway_server(db_url) as base:
        # One phone reports Delivered before Sent; the other reports every state twice,
        # with epoch-millisecond times, and its delivery reports come late.
        phone_a = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "A",
                                   PhoneBehaviour(fail=fails, out_of_order=True))
        phone_b = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "B",
                                   PhoneBehaviour(fail=fails, report_twice=True, epoch_ms=True,
                                                  deliver_after=0.05))
        await phone_a.start()
        await phone_b.start()
        try:
            ids = await push(base, token, entries)
            await wait_for(lambda: finished(receiver) >= set(ids), 90,
                           "a final report for every message",
                           lambda: f"{len(finished(receiver))}/300 final; phones sent "
                                   f"{len(phone_a.sent)} + {len(phone_b.sent)}")
            status = await picky(base, "device-status", token)
        finally:
            await phone_a.die()
            await phone_b.die()

    # Each phone took exactly its day's limit, and no message went out twice.
    assert len(phone_a.sent) == len(phone_b.sent) == 150
    assert not set(phone_a.fetched) & set(phone_b.fetched)
    assert set(phone_a.fetched) | set(phone_b.fetched) == set(ids)
    assert {r[0] for r in query("SELECT resends FROM messages")} == {0}
    assert "MessageEnqueued" in phone_a.events and phone_b.keepalives > 0

    # Hand-outs to one phone are spaced by the random delay of every message of the last one.
    handed: dict[str, Counter[float]] = defaultdict(Counter)
    for device_id, at in query("SELECT device_id, handed_at FROM device_messages"):
        handed[device_id][at] += 1
    assert len(handed) == 2
    for batches in handed.values():
        times = sorted(batches)
        assert max(batches.values()) <= 10
        for earlier, later in zip(times, times[1:], strict=False):
            assert later - earlier >= 0.01 * batches[earlier] - 1e-6, (earlier, later)

    # Every fate reached the webhook once: submitted then delivered, or refunded.
    failing = {mid for mid, entry in zip(ids, entries, strict=True)
               if entry["number"].endswith("7")}
    assert len(failing) == 30
    seen = reports_by_message(receiver)
    for mid in ids:
        expected = [(5, "refunded")] if mid in failing else [(4, "submitted"), (1, "delivered")]
        assert sorted(seen[mid], key=lambda r: r[0] != 4) == expected, (mid, seen[mid])
    assert all(post.signature_valid for post in receiver.accepted_posts())
    by_id = {r["msg_id"]: r for r in receiver.accepted_reports()}
    for mid, entry in zip(ids, entries, strict=True):
        assert by_id[mid]["reference_number"] == entry["reference_number"]
        assert by_id[mid]["message"] == entry["message"]
    assert all(by_id[mid]["error_code"] == "RESULT_ERROR_GENERIC_FAILURE" for mid in failing)

    balance = (await store.get_project(project.id)).balance_micro
    assert balance == parse_credits("100") - 270 * parse_credits(PRICE)
    assert status["status"] == "CONNECTED" and len(status["devices"]) == 2
    assert status["message_queue_count"] == 0 and status["channel_id"] == spec.id


async def test_a_phone_dying_mid_batch_leaves_its_messages_to_the_other(
        db_url: str, make, query, receiver: WebhookReceiver) -> None:
    _project, token, _spec = await set_up(
        make, receiver, per_fetch=10, max_in_flight=10, lease_seconds=1.0,
        offline_after_seconds=1.0, keepalive_seconds=0.2)
    numbers = indian_mobiles(40)
    with gateway_server(db_url) as base:
        # A's radio is slow: it holds a batch of ten for a while.
        dying = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "dying",
                                 PhoneBehaviour(send_seconds=0.15))
        await dying.start()
        ids = await push(base, token, [{"number": n, "message": f"bill {i} is due"}
                                       for i, n in enumerate(numbers)])
        await wait_for(lambda: len(dying.sent) >= 2, 30, "the first phone to send a few")
        await dying.die()

        survivor = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "survivor")
        await survivor.start()

        def settled() -> bool:
            seen = reports_by_message(receiver)
            return (all((4, "submitted") in seen[mid] for mid in ids)
                    and all((1, "delivered") in seen[s.message_id] for s in survivor.sent)
                    and not query("SELECT 1 FROM messages WHERE state IN ('queued', 'sending')"))

        try:
            await wait_for(settled, 60, "every message sent, the survivor's delivered",
                           lambda: f"survivor sent {len(survivor.sent)}; states "
                                   f"{query('SELECT state, count(*) FROM messages GROUP BY 1')}")
            await asyncio.sleep(1.0)    # the dying phone has been silent over a second
            status = await picky(base, "device-status", token)
        finally:
            await survivor.die()

    seen = reports_by_message(receiver)
    survivor_sent = {s.message_id for s in survivor.sent}
    for mid in ids:
        # Sent once each; a message the dying phone reported sent just before it died gets
        # no delivery report (its receipts died with it), every other one does.
        assert seen[mid].count((4, "submitted")) == 1, (mid, seen[mid])
        delivered = seen[mid].count((1, "delivered"))
        assert delivered == 1 or (delivered == 0 and mid not in survivor_sent), (mid, seen[mid])
    resent = {str(r[0]) for r in query("SELECT id FROM messages WHERE resends > 0")}
    # What the gateway handed the dying phone (a fetch cut off by its death still counts).
    held = {str(r[0]) for r in query(
        "SELECT message_id FROM device_messages WHERE device_id = ?", dying.device_id)}
    assert len(held) > len(dying.sent)
    # What the dead phone held and never reported went out again from the survivor, counted
    # as possible re-sends; nothing else was sent twice.
    assert resent and resent <= held and resent <= survivor_sent
    assert survivor_sent & {s.message_id for s in dying.sent} <= resent
    states = {d["name"]: d["status"] for d in status["devices"]}
    assert states == {"dying": "OFFLINE", "survivor": "CONNECTED"}


async def test_a_phone_at_androids_limit_rests_and_its_message_goes_later_not_refunded(
        db_url: str, make, query, store, receiver: WebhookReceiver) -> None:
    """The app reports Android's limit as "Send result: RESULT_ERROR_LIMIT_EXCEEDED (Failed
    because we reached the sending queue limit)": the phone rests, the message goes back to
    the queue without counting an attempt and is sent later (here by a second phone); nothing
    is refunded."""
    project, token, _spec = await set_up(make, receiver, limit_pause_seconds=600)
    numbers = indian_mobiles(3)
    with gateway_server(db_url) as base:
        limited = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "limited",
                                   PhoneBehaviour(android_limit=2))
        await limited.start()
        other = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "other")
        try:
            ids = await push(base, token, [{"number": n, "message": f"code {i}"}
                                           for i, n in enumerate(numbers)])
            await wait_for(lambda: len(limited.sent) == 3, 30, "the phone to hit its limit")
            refused = limited.sent[-1]
            assert refused.outcome == app_error(LIMIT_EXCEEDED)
            await other.start()
            await wait_for(lambda: finished(receiver) >= set(ids), 30, "every message delivered",
                           lambda: str(query("SELECT id, state FROM messages")))
            rested = await store.get_device(limited.device_id)
        finally:
            await limited.die()
            await other.die()

    seen = reports_by_message(receiver)
    assert all(sorted(seen[mid]) == [(1, "delivered"), (4, "submitted")] for mid in ids), seen
    assert [s.message_id for s in other.sent] == [refused.message_id]
    assert rested is not None and rested.paused_until > time.time() + 500
    [(state, attempts, code)] = query("SELECT state, attempts, error_code FROM messages"
                                      " WHERE id = ?", int(refused.message_id))
    assert (state, attempts, code) == ("delivered", 1, None)
    balance = (await store.get_project(project.id)).balance_micro
    assert balance == parse_credits("100") - 3 * parse_credits(PRICE)


async def test_stop_resume_and_delete_the_queue(db_url: str, make, query, store,
                                                receiver: WebhookReceiver) -> None:
    project, token, _spec = await set_up(
        make, receiver, per_fetch=2, max_in_flight=2, min_delay_seconds=0.05,
        max_delay_seconds=0.06)
    numbers = indian_mobiles(21)

    def handed() -> int:
        return int(query("SELECT count(*) FROM device_messages")[0][0])

    with gateway_server(db_url) as base:
        phone = FakeAndroidPhone(base + PREFIX, PRIVATE_TOKEN, "only")
        await phone.start()
        try:
            ids = await push(base, token, [{"number": n, "message": f"notice {i}"}
                                           for i, n in enumerate(numbers[:20])])
            await wait_for(lambda: len(phone.sent) >= 4, 30, "a few sends")
            assert (await picky(base, "device-action", token,
                                command="stop-message-queue"))["status"] == 100
            await asyncio.sleep(0.2)        # a fetch answered just before the stop lands
            stopped_at = handed()
            await asyncio.sleep(0.6)
            assert handed() == stopped_at, "messages were handed out while stopped"

            assert (await picky(base, "device-action", token,
                                command="resume-message-queue"))["status"] == 100
            await wait_for(lambda: handed() >= stopped_at + 4, 30, "sending to go on")
            await picky(base, "device-action", token, command="stop-message-queue")
            await asyncio.sleep(0.2)
            deleted = await picky(base, "device-action", token, command="delete-message-queue")
            assert deleted["status"] == 100 and deleted["cancelled"] > 0
            cancelled = {str(r[0]) for r in query(
                "SELECT id FROM messages WHERE state = 'cancelled'")}
            assert len(cancelled) == deleted["cancelled"]
            sent_ids = set(ids) - cancelled
            await wait_for(lambda: finished(receiver) >= set(ids), 30, "every fate reported")

            # A new push restarts the stopped queue.
            more = await push(base, token, [{"number": numbers[20], "message": "again"}])
            await wait_for(lambda: more[0] in {s.message_id for s in phone.sent}, 30,
                           "the next push to be sent")

            restarted = await picky(base, "device-action", token, command="restart")
            assert restarted["devices"] == 1
            await wait_for(lambda: "SettingsUpdated" in phone.events and phone.connections >= 2,
                           15, "the phone to reconnect")
        finally:
            await phone.die()

    seen = reports_by_message(receiver)
    assert all(seen[mid] == [(5, "cancelled")] for mid in cancelled), seen
    assert all(sorted(seen[mid]) == [(1, "delivered"), (4, "submitted")] for mid in sent_ids)
    assert {s.message_id for s in phone.sent} == sent_ids | set(more)
    balance = (await store.get_project(project.id)).balance_micro
    assert balance == parse_credits("100") - (21 - len(cancelled)) * parse_credits(PRICE)


def test_a_phone_paired_listed_and_revoked_through_the_cli(e2e: Harness) -> None:
    e2e.cli("project", "create", "phones", "--credits", "5")
    channel = e2e.cli_json("channel", "add", "--project", "phones", "--type", "android",
                           "--application", "3", "--price", PRICE)
    server = e2e.serve()
    base = server.base_url
    assert base is not None
    paired = e2e.cli_json("device", "pair", "--channel", str(channel["id"]),
                          "--server-url", base)
    assert paired["api_url"] == base + PREFIX
    token = paired["private_token"]
    shown = e2e.cli("device", "pair", "--channel", str(channel["id"]), "--server-url", base)
    assert token in shown and paired["api_url"] in shown
    assert "▄" in shown            # the QR codes, drawn with half blocks

    phone = httpx.post(f"{base}{PREFIX}/device", json={"name": "Moto G"}, timeout=10,
                       headers={"Authorization": f"Bearer {token}"})
    assert phone.status_code == 201, phone.text
    device = phone.json()
    listed = e2e.cli_json("device", "list", "--channel", str(channel["id"]))
    assert [(d["id"], d["name"], d["status"]) for d in listed] == [
        (device["id"], "Moto G", "online")]

    e2e.cli("device", "revoke", device["id"])
    assert e2e.cli_json("device", "list")[0]["status"] == "revoked"
    refused = httpx.get(f"{base}{PREFIX}/message", timeout=10,
                        headers={"Authorization": f"Bearer {device['token']}"})
    assert refused.status_code == 401

    rotated = e2e.cli_json("device", "pair", "--channel", str(channel["id"]),
                           "--server-url", base, "--rotate-token")
    assert rotated["private_token"] != token
    for secret, expected in ((token, 401), (rotated["private_token"], 201)):
        answer = httpx.post(f"{base}{PREFIX}/device", json={"name": "next"}, timeout=10,
                            headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == expected, (secret, answer.text)
