"""The device API of "SMS Gateway for Android" (pushgate as the app's private server), through the
in-process app: registration, fetching, state reports, limits, stickiness and leases."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.fakes.android_phone import LIMIT_EXCEEDED as LIMIT
from tests.fakes.android_phone import app_error

from pushgate.core.pricing import parse_credits

GENERIC = "RESULT_ERROR_GENERIC_FAILURE"

API = "/api/mobile/v1"
PRIVATE_TOKEN = "private-token-for-tests-0123456789"
NUMBERS = [f"9198765{i:05d}" for i in range(40)]
# No limits, no delays: each test turns on what it checks.
OPEN = {"per_minute": 0, "per_hour": 0, "per_day": 0, "min_delay_seconds": 0,
        "max_delay_seconds": 0, "per_fetch": 100, "max_in_flight": 100}


async def _setup(app_client, make, credits: str = "10", private_token: str = PRIVATE_TOKEN,
                 **config: Any):
    project, token, _secret = await make.project(credits=credits)
    spec = await make.channel(project.id, application=3, kind="android", price="0.01",
                              config={"private_token": private_token, **OPEN, **config})
    client, gateway = await app_client()
    return client, gateway, project, token, spec


async def _register(client, name: str = "Pixel 7", token: str = PRIVATE_TOKEN,
                    user_agent: str = "SMSGateway/1.31.0") -> dict[str, Any]:
    response = await client.post(f"{API}/device", json={"name": name, "pushToken": None},
                                 headers={"Authorization": f"Bearer {token}",
                                          "User-Agent": user_agent})
    assert response.status_code == 201, response.text
    return response.json()


def _auth(device: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {device['token']}"}


async def _push(client, token: str, numbers: list[str], priority: int = 0,
                text: str = "Your code is {i}") -> list[str]:
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "3", "priority": str(priority), "globalmessage": "",
        "data": [{"number": n, "message": text.format(i=i)} for i, n in enumerate(numbers)]})
    body = response.json()
    assert body["status"] == 100, body
    return [entry["msg_id"] for entry in body["data"]]


async def _fetch(client, device: dict[str, Any], **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/message", headers=_auth(device), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _report(client, device: dict[str, Any], message_id: str, state: str,
                  error: str | None = None, at: str | int | None = None,
                  number: str = "+1") -> None:
    states: dict[str, str | int] = {state: at} if at is not None else {}
    response = await client.patch(f"{API}/message", headers=_auth(device), json=[{
        "id": message_id, "state": state, "states": states,
        "recipients": [{"phoneNumber": number, "state": state, "error": error}]}])
    assert response.status_code == 204, response.text


def _states(query, ids: list[str]) -> dict[str, str]:
    rows = query("SELECT id, state FROM messages")
    return {str(mid): state for mid, state in rows if str(mid) in ids}


async def test_registration_answers_as_the_app_expects(app_client, make, query) -> None:
    client, _gw, _project, _token, spec = await _setup(app_client, make)
    refused = await client.post(f"{API}/device", json={"name": "x"},
                                headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert refused.status_code == 401 and "message" in refused.json()
    assert (await client.post(f"{API}/device", json={})).status_code == 401

    device = await _register(client)
    assert set(device) == {"id", "token", "login", "password"}
    assert len(device["id"]) == 21 and device["token"] and device["password"] == ""
    assert str(spec.id) in device["login"]
    rows = query("SELECT channel_id, name, token_hash FROM devices WHERE id = ?", device["id"])
    assert rows[0][:2] == (spec.id, "Pixel 7")
    assert device["token"] not in rows[0][2]   # stored hashed

    # Every registration is a device of its own.
    other = await _register(client, name="Galaxy")
    assert other["id"] != device["id"] and other["token"] != device["token"]


async def test_repeated_bad_registrations_are_rate_limited(app_client, make) -> None:
    client, *_ = await _setup(app_client, make)
    answers = [(await client.post(f"{API}/device", json={},
                                  headers={"Authorization": f"Bearer guess-{i:020d}"}))
               .status_code for i in range(12)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]


async def test_get_and_patch_device(app_client, make, store) -> None:
    client, *_ = await _setup(app_client, make)
    device = await _register(client)
    anonymous = await client.get(f"{API}/device")
    assert anonymous.status_code == 200 and "device" not in anonymous.json()
    assert "externalIp" in anonymous.json()
    mine = (await client.get(f"{API}/device", headers=_auth(device))).json()
    assert mine["device"]["id"] == device["id"] and mine["device"]["name"] == "Pixel 7"

    other = await client.patch(f"{API}/device", headers=_auth(device),
                               json={"id": "someone-else", "pushToken": "fcm"})
    assert other.status_code == 403
    ok = await client.patch(f"{API}/device", headers=_auth(device), json={
        "id": device["id"], "pushToken": "fcm-token", "battery": {"level": 81, "charging": True}})
    assert ok.status_code == 204
    stored = await store.get_device(device["id"])
    assert stored is not None and stored.push_token == "fcm-token"
    assert stored.health == {"battery": {"level": 81, "charging": True}}
    assert (await client.patch(f"{API}/device", json={"pushToken": "x"})).status_code == 401


async def test_pending_messages_come_priority_first_with_every_field(
        app_client, make, query) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make)
    device = await _register(client)
    low = await _push(client, token, NUMBERS[:3], text="low {i}")
    high = await _push(client, token, NUMBERS[3:5], priority=1, text="high {i}")

    items = await _fetch(client, device)
    assert [i["id"] for i in items] == high + low
    first = items[0]
    assert first["message"] == first["textMessage"]["text"] == "high 0"
    assert first["phoneNumbers"] == [f"+{NUMBERS[3]}"]
    assert first["state"] == "Pending" and first["priority"] == 1
    assert first["withDeliveryReport"] is True and first["isEncrypted"] is False
    assert {"simNumber", "ttl", "scheduleAt"} <= set(first)
    created = datetime.fromisoformat(first["createdAt"])
    valid_until = datetime.fromisoformat(first["validUntil"])
    assert created.tzinfo is not None and valid_until > created
    assert abs(created.timestamp() - time.time()) < 60

    # Not acknowledged yet: the next fetch hands out the same ones, not a second claim.
    again = await _fetch(client, device)
    assert [i["id"] for i in again] == high + low
    assert {row[0] for row in query("SELECT attempts FROM messages")} == {1}
    lifo = await _fetch(client, device, order="lifo")
    assert [i["id"] for i in lifo] == high[::-1] + low[::-1]

    # Once the phone reports Processed, it has them: they are not handed out again.
    for item in items:
        await _report(client, device, item["id"], "Processed")
    assert await _fetch(client, device) == []
    assert set(_states(query, high + low).values()) == {"sending"}


async def test_state_reports_move_the_messages(app_client, make, store, query) -> None:
    client, _gw, project, token, _spec = await _setup(app_client, make, credits="1")
    device = await _register(client)
    ids = await _push(client, token, NUMBERS[:4])
    await _fetch(client, device)
    delivered_at = "2026-01-02T03:04:05Z"
    epoch_ms = int((time.time() - 30) * 1000)

    await _report(client, device, ids[0], "Processed")
    await _report(client, device, ids[0], "Sent", at=epoch_ms)
    await _report(client, device, ids[0], "Delivered", at=delivered_at)
    await _report(client, device, ids[1], "Sent")
    await _report(client, device, ids[2], "Failed", error=app_error(GENERIC))
    await _report(client, device, ids[3], "Processed")

    assert _states(query, ids) == {ids[0]: "delivered", ids[1]: "submitted",
                                   ids[2]: "refunded", ids[3]: "sending"}
    delivered = query("SELECT at FROM message_events WHERE message_id = ? AND state = ?",
                      int(ids[0]), "delivered")
    assert delivered == [(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp(),)]
    failed = query("SELECT error_code, error_message FROM messages WHERE id = ?", int(ids[2]))
    assert failed[0][0] == GENERIC and failed[0][1] == f"phone Pixel 7: {app_error(GENERIC)}"
    # One message's credit came back: 1 - 4 × 0.01 + 0.01.
    balance = (await store.get_project(project.id)).balance_micro
    assert balance == parse_credits("1") - 3 * parse_credits("0.01")

    # A report repeated, or arriving after a later one, changes nothing.
    await _report(client, device, ids[0], "Sent")
    await _report(client, device, ids[1], "Sent")
    assert _states(query, ids)[ids[0]] == "delivered"
    # Submitted once (in the message's columns, core/history.py); the repeat only noted.
    assert query("SELECT submitted_at IS NOT NULL FROM messages WHERE id = ?",
                 int(ids[1])) == [(1,)]
    assert query("SELECT count(*) FROM message_events WHERE message_id = ? AND state = ?"
                 " AND detail NOT LIKE '%ignored%'", int(ids[1]), "submitted") == [(0,)]


# The app's words: "Send result: RESULT_ERROR_LIMIT_EXCEEDED (Failed because we reached the
# sending queue limit)"; older clients send the bare code.
@pytest.mark.parametrize("error", [app_error(LIMIT), LIMIT])
async def test_android_limit_requeues_without_an_attempt_and_rests_the_phone(
        app_client, make, query, store, error) -> None:
    client, _gw, project, token, _spec = await _setup(app_client, make,
                                                      limit_pause_seconds=600)
    phone, other = await _register(client, "A"), await _register(client, "B")
    ids = await _push(client, token, NUMBERS[:2])
    await _fetch(client, phone)
    await _report(client, phone, ids[0], "Failed", error=error)
    assert (await store.get_project(project.id)).balance_micro == parse_credits("9.98")

    row = query("SELECT state, attempts, error_code FROM messages WHERE id = ?", int(ids[0]))
    assert row == [("queued", 0, "RESULT_ERROR_LIMIT_EXCEEDED")]
    rested = await store.get_device(phone["id"])
    assert rested is not None and rested.paused_until > time.time() + 500
    await asyncio.sleep(0.1)    # the re-queued message waits a moment before anyone takes it
    # The resting phone gets nothing new, only what it still holds unacknowledged.
    assert [i["id"] for i in await _fetch(client, phone)] == [ids[1]]
    taken = await _fetch(client, other)
    assert [i["id"] for i in taken] == [ids[0]]


async def test_a_phone_that_cannot_send_rests_and_its_message_waits_for_another(
        app_client, make, query, store) -> None:
    client, _gw, project, token, _spec = await _setup(app_client, make,
                                                      trouble_pause_seconds=120)
    phone, other = await _register(client, "A"), await _register(client, "B")
    ids = await _push(client, token, NUMBERS[:1])
    await _fetch(client, phone)
    before = time.time()
    await _report(client, phone, ids[0], "Failed", error=app_error("RESULT_ERROR_NO_SERVICE"))

    row = query("SELECT state, attempts, error_code FROM messages WHERE id = ?", int(ids[0]))
    assert row == [("queued", 0, "RESULT_ERROR_NO_SERVICE")]
    rested = await store.get_device(phone["id"])
    assert rested is not None and before + 120 <= rested.paused_until < before + 600
    assert (await store.get_project(project.id)).balance_micro == parse_credits("9.99")
    await asyncio.sleep(0.1)
    assert await _fetch(client, phone) == []
    assert [i["id"] for i in await _fetch(client, other)] == [ids[0]]


async def test_a_passing_fault_is_retried_later_as_an_attempt(app_client, make, query,
                                                               store) -> None:
    client, _gw, project, token, _spec = await _setup(app_client, make)
    phone = await _register(client, "A")
    ids = await _push(client, token, NUMBERS[:1])
    await _fetch(client, phone)
    before = time.time()
    await _report(client, phone, ids[0], "Failed",
                  error=app_error("RESULT_RIL_SMS_SEND_FAIL_RETRY"))

    [(state, attempts, code, next_at)] = query(
        "SELECT state, attempts, error_code, next_attempt_at FROM messages WHERE id = ?",
        int(ids[0]))
    assert (state, attempts, code) == ("queued", 1, "RESULT_RIL_SMS_SEND_FAIL_RETRY")
    assert next_at > before   # the usual back-off
    rested = await store.get_device(phone["id"])
    assert rested is not None and rested.paused_until <= before
    assert (await store.get_project(project.id)).balance_micro == parse_credits("9.99")


async def test_reports_for_messages_not_handed_to_the_phone_are_ignored(
        app_client, make, query) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make)
    phone, other = await _register(client, "A"), await _register(client, "B")
    ids = await _push(client, token, NUMBERS[:1])
    await _fetch(client, phone)
    await _report(client, other, ids[0], "Sent")            # not B's
    await _report(client, phone, "999999", "Sent")          # no such message
    await _report(client, phone, "not-a-number", "Sent")    # not an id pushgate gives
    assert _states(query, ids) == {ids[0]: "sending"}

    bad = await client.patch(f"{API}/message", headers=_auth(phone),
                             json=[{"id": ids[0], "state": "Teleported", "recipients": []}])
    assert bad.status_code == 400
    bad_key = await client.patch(f"{API}/message", headers=_auth(phone), json=[{
        "id": ids[0], "state": "Sent", "states": {"Lost": "2026-01-01T00:00:00Z"}}])
    assert bad_key.status_code == 400
    assert (await client.patch(f"{API}/message", json=[])).status_code == 401
    assert (await client.get(f"{API}/message")).status_code == 401


async def test_per_minute_limit(app_client, make) -> None:
    client, _gw, _project, token, _spec = await _setup(
        app_client, make, per_minute=3, per_fetch=2, max_in_flight=10)
    device = await _register(client)
    await _push(client, token, NUMBERS[:6])
    first = await _fetch(client, device)
    assert len(first) == 2                      # per_fetch
    for item in first:
        await _report(client, device, item["id"], "Sent")
    second = await _fetch(client, device)
    assert len(second) == 1                     # 3 a minute
    for item in second:
        await _report(client, device, item["id"], "Sent")
    assert await _fetch(client, device) == []


async def test_a_phone_holding_its_cap_gets_no_more(app_client, make) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make, per_fetch=5,
                                                       max_in_flight=3)
    busy = await _register(client)
    await _push(client, token, NUMBERS[:6])
    held = await _fetch(client, busy)
    assert len(held) == 3
    for item in held:
        await _report(client, busy, item["id"], "Processed")
    assert await _fetch(client, busy) == []    # still holding three
    await _report(client, busy, held[0]["id"], "Sent")
    assert len(await _fetch(client, busy)) == 1


async def test_random_delay_spaces_hand_outs(app_client, make, query) -> None:
    client, _gw, _project, token, _spec = await _setup(
        app_client, make, per_fetch=1, min_delay_seconds=0.3, max_delay_seconds=0.4)
    device = await _register(client)
    ids = await _push(client, token, NUMBERS[:3])
    fetched = 0
    deadline = time.monotonic() + 10
    while fetched < 3 and time.monotonic() < deadline:
        for item in await _fetch(client, device):
            fetched += 1
            await _report(client, device, item["id"], "Sent")
        await asyncio.sleep(0.02)
    assert fetched == 3
    # The gateway's own hand-out times: the client's clock would add the answers' latency.
    handed = sorted(at for mid, at in query(
        "SELECT message_id, handed_at FROM device_messages") if str(mid) in ids)
    assert len(handed) == 3
    assert all(b - a >= 0.3 for a, b in zip(handed, handed[1:], strict=False)), handed


async def test_a_recipient_stays_with_its_phone_while_that_phone_is_online(
        app_client, make, query) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make)
    phone_a, phone_b = await _register(client, "A"), await _register(client, "B")
    first = await _push(client, token, NUMBERS[:1])
    await _fetch(client, phone_a)
    await _report(client, phone_a, first[0], "Sent")

    again = await _push(client, token, [NUMBERS[0], NUMBERS[1]], text="again {i}")
    taken_by_b = [i["id"] for i in await _fetch(client, phone_b)]
    assert taken_by_b == [again[1]]             # A's recipient waits for A
    await _report(client, phone_b, again[1], "Sent")
    assert [i["id"] for i in await _fetch(client, phone_a)] == [again[0]]

    # A goes offline: its recipients are anyone's.
    third = await _push(client, token, [NUMBERS[0]], text="third {i}")
    query("UPDATE devices SET last_seen_at = ? WHERE id = ?", time.time() - 3600, phone_a["id"])
    assert [i["id"] for i in await _fetch(client, phone_b)] == [third[0]]


async def test_a_silent_phones_messages_go_to_another_phone_after_the_lease(
        app_client, make, query) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make, lease_seconds=0.3)
    silent, alive = await _register(client, "silent"), await _register(client, "alive")
    ids = await _push(client, token, NUMBERS[:3])
    assert len(await _fetch(client, silent)) == 3
    assert await _fetch(client, alive) == []
    await asyncio.sleep(0.4)
    taken = await _fetch(client, alive)
    assert sorted(i["id"] for i in taken) == sorted(ids)
    resends = query("SELECT resends FROM messages WHERE id IN (?, ?, ?)", *map(int, ids))
    assert [r[0] for r in resends] == [1, 1, 1]
    for item in taken:
        await _report(client, alive, item["id"], "Sent")
    # The silent phone comes back and reports one late: it moves nothing twice.
    await _report(client, silent, ids[0], "Sent")
    assert set(_states(query, ids).values()) == {"submitted"}
    # Each submitted once (in its columns, core/history.py); the late report only noted.
    assert query("SELECT count(*) FROM messages WHERE submitted_at IS NOT NULL") == [(3,)]
    assert query("SELECT count(*) FROM message_events WHERE state = 'submitted'"
                 " AND detail NOT LIKE '%ignored%'") == [(0,)]


async def test_settings_webhooks_and_revoked_devices(app_client, make, store) -> None:
    client, _gw, _project, _token, spec = await _setup(
        app_client, make, per_minute=4, min_delay_seconds=12, max_delay_seconds=20.6)
    device = await _register(client)
    settings = (await client.get(f"{API}/settings", headers=_auth(device))).json()
    assert settings == {"messages": {"send_interval_min": 12, "send_interval_max": 21,
                                     "limit_period": "PerMinute", "limit_value": 4}}
    webhooks = await client.get(f"{API}/webhooks", headers=_auth(device))
    assert webhooks.status_code == 200 and webhooks.json() == []

    assert await store.revoke_devices(time.time(), device_id=device["id"]) == 1
    for method, path in (("GET", "/message"), ("GET", "/settings"), ("GET", "/events"),
                         ("PATCH", "/device")):
        response = await client.request(method, f"{API}{path}", headers=_auth(device), json={})
        assert response.status_code == 401, (method, path)
    assert (await store.list_devices(spec.id))[0].revoked_at is not None


async def test_another_channels_phone_sees_none_of_these_messages(app_client, make) -> None:
    client, _gw, project, token, _spec = await _setup(app_client, make)
    other_token = "another-private-token-0123456789"
    await make.channel(project.id, application=2, kind="android", price="0.01",
                       config={"private_token": other_token, **OPEN})
    mine, theirs = await _register(client), await _register(client, token=other_token)
    ids = await _push(client, token, NUMBERS[:2])
    assert await _fetch(client, theirs) == []
    assert [i["id"] for i in await _fetch(client, mine)] == ids


@pytest.mark.parametrize("config", [{"per_minute": -1}, {"min_delay_seconds": 5,
                                                          "max_delay_seconds": 1},
                                    {"private_token": "short"}, {"sim_number": 4},
                                    {"lease_seconds": 0}])
def test_bad_phone_config_names_the_key(config: dict[str, Any]) -> None:
    from pushgate.channels.android import AndroidChannel
    from pushgate.channels.base import ChannelConfigError

    with pytest.raises(ChannelConfigError) as error:
        AndroidChannel.validate_config(config)
    assert any(key in str(error.value) for key in config)


async def test_messages_past_their_validity_are_never_handed_out(
        app_client, make, query, store) -> None:
    client, _gw, _project, token, _spec = await _setup(app_client, make, lease_seconds=0.2)
    silent, other = await _register(client, "silent"), await _register(client, "other")
    held = await _push(client, token, NUMBERS[:1])
    assert [i["id"] for i in await _fetch(client, silent)] == held
    fresh = await _push(client, token, NUMBERS[1:2])
    # Their validity ends now: each message's, and its push's due sweep (migration 0007).
    past = time.time() - 1
    query("UPDATE messages SET expires_at = ?", past)
    query("UPDATE pushes SET expiry_due = ?", past)
    await asyncio.sleep(0.3)
    assert await _fetch(client, other) == []   # neither the silent phone's nor the new one
    assert _states(query, held + fresh) == {held[0]: "sending", fresh[0]: "queued"}
    assert await store.expire_due(time.time(), 10) == 2
    assert set(_states(query, held + fresh).values()) == {"expired"}
    assert query("SELECT id, error_message FROM messages ORDER BY id") == [
        (int(held[0]), "validity period ended before its last send was confirmed"),
        (int(fresh[0]), "validity period ended")]
