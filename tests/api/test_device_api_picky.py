"""Picky's device-status and device-action on phone channels, bridge-like channels and the
voice channel."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pushgate.channels.base import Channel, ChannelStatus, register
from pushgate.core.models import OutboundMessage, SendResult
from pushgate.core.pricing import parse_credits

API = "/api/mobile/v1"
PRIVATE_TOKEN = "private-token-for-tests-0123456789"
NUMBERS = [f"9198765{i:05d}" for i in range(20)]
OPEN = {"per_minute": 0, "per_hour": 0, "per_day": 0, "min_delay_seconds": 0,
        "max_delay_seconds": 0, "per_fetch": 100, "max_in_flight": 100}


@register
class StatusProbe(Channel):
    """A connector whose link state the test chooses (``config.mode``)."""

    kind = "test-status-probe"

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult.sent(message.id, str(message.id))

    async def status(self) -> ChannelStatus:
        mode = self.spec.config.get("mode")
        if mode == "broken":
            raise ConnectionError("bridge unreachable")
        if mode == "unpaired":
            return ChannelStatus(connected=False, detail="scan the QR code", state="UNPAIRED")
        return ChannelStatus(connected=True, state="CONNECTED", connected_number="919800000001",
                             extra={"version": "2.3000.1"})


async def _project(make, webhook_url: str | None = None, credits: str = "10"):
    project, token, _secret = await make.project(credits=credits, webhook_url=webhook_url)
    return project, token


async def _phone_channel(make, project_id: int, **config: Any):
    return await make.channel(project_id, application=3, kind="android", price="0.01",
                              config={"private_token": PRIVATE_TOKEN, **OPEN, **config})


async def _register(client, name: str = "Pixel 7") -> dict[str, Any]:
    response = await client.post(f"{API}/device", json={"name": name},
                                 headers={"Authorization": f"Bearer {PRIVATE_TOKEN}",
                                          "User-Agent": "SMSGateway/1.31.0 (Android 14)"})
    assert response.status_code == 201, response.text
    return response.json()


def _auth(device: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {device['token']}",
            "User-Agent": "SMSGateway/1.31.0 (Android 14)"}


async def _push(client, token: str, numbers: list[str], application: str = "3") -> list[str]:
    response = await client.post("/api/v2/push", json={
        "token": token, "application": application, "globalmessage": "hello",
        "data": [{"number": n} for n in numbers]})
    body = response.json()
    assert body["status"] == 100, body
    return [e["msg_id"] for e in body["data"]]


async def _fetch(client, device: dict[str, Any]) -> list[str]:
    response = await client.get(f"{API}/message", headers=_auth(device))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()]


async def _action(client, token: str, command: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/device-action",
                                 json={"token": token, "command": command, **fields})
    return response.json()


async def _status(client, token: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/device-status", json={"token": token, **fields})
    assert response.status_code == 200, response.text
    return response.json()


async def test_phone_status_follows_the_phone(app_client, make, query) -> None:
    project, token = await _project(make)
    spec = await _phone_channel(make, project.id)
    client, _gw = await app_client()

    before = await _status(client, token)
    assert before["status"] == "OFFLINE" and before["last_seen"] is None
    assert before["project_id"] == str(project.id) and before["channel_id"] == spec.id
    assert datetime.fromisoformat(before["time"]).tzinfo is not None

    device = await _register(client)
    await client.patch(f"{API}/device", headers=_auth(device), json={
        "id": device["id"], "battery": {"level": 64, "charging": False},
        "network": {"type": "cellular"}})
    await _push(client, token, NUMBERS[:3])
    await _fetch(client, device)
    await _push(client, token, NUMBERS[3:5])

    now = await _status(client, token, application=3)
    assert now["status"] == "CONNECTED"
    assert now["version"] == "1.31.0"
    assert now["battery"] == {"level": 64, "charging": False}
    assert now["network"] == {"type": "cellular"}
    assert now["message_queue_count"] == 5 and now["in_flight"] == 3
    assert datetime.fromisoformat(now["last_seen"]).timestamp() > time.time() - 60
    assert [d["id"] for d in now["devices"]] == [device["id"]]
    assert now["devices"][0]["in_flight"] == 3 and now["devices"][0]["status"] == "CONNECTED"

    query("UPDATE devices SET last_seen_at = ?", time.time() - 600)
    later = await _status(client, token)
    assert later["status"] == "OFFLINE" and later["last_seen"] is not None


async def test_status_of_other_channels_comes_from_their_connector(app_client, make) -> None:
    project, token = await _project(make)
    await make.channel(project.id, application=10, kind="test-status-probe", price="0.01")
    await make.channel(project.id, application=1, kind="test-status-probe", price="0.01",
                       config={"mode": "unpaired"})
    await make.channel(project.id, application=2, kind="test-status-probe", price="0.01",
                       config={"mode": "broken"})
    client, _gw = await app_client()

    bridge = await _status(client, token, application=10)
    assert bridge["status"] == "CONNECTED" and bridge["connected_number"] == "919800000001"
    assert bridge["version"] == "2.3000.1" and bridge["message_queue_count"] == 0
    assert (await _status(client, token, application=1))["status"] == "UNPAIRED"
    down = await _status(client, token, application="2")
    assert down["status"] == "TIMEOUT" and "unreachable" in down["detail"]

    several = await client.post("/api/v2/device-status", json={"token": token})
    assert several.json()["status"] == 406
    wrong = await client.post("/api/v2/device-status", json={"token": "pg_nope"})
    assert wrong.status_code == 401 and wrong.json()["status"] == 401
    missing = await client.post("/api/v2/device-status", json={"token": token,
                                                               "application": 77})
    assert missing.json()["status"] == 407


async def test_device_routes_read_application_as_a_code_and_channel_id_as_an_id(
        app_client, make, store) -> None:
    project, token = await _project(make)
    bridge = await make.channel(project.id, application=10, kind="test-status-probe")
    phone = await _phone_channel(make, project.id)
    assert (bridge.id, phone.id) == (1, 2)
    client, _gw = await app_client()

    # No channel serves application 2: refused, though channel 2 exists (and nothing stops).
    status = await client.post("/api/v2/device-status", json={"token": token,
                                                              "application": "2"})
    assert status.json()["status"] == 407
    action = await _action(client, token, "stop-message-queue", application=2)
    assert action["status"] == 407
    assert not (await store.get_channel(phone.id)).paused

    by_id = await _status(client, token, channel_id=phone.id)
    assert by_id["channel_id"] == phone.id and by_id["application"] == 3
    assert (await _status(client, token, channel_id=bridge.id, application=10))[
        "status"] == "CONNECTED"
    mismatch = await client.post("/api/v2/device-status", json={
        "token": token, "channel_id": bridge.id, "application": 3})
    assert mismatch.json()["status"] == 422
    foreign = await client.post("/api/v2/device-status", json={"token": token,
                                                               "channel_id": 99})
    assert foreign.json()["status"] == 421


async def test_stop_resume_and_the_next_push(app_client, make) -> None:
    project, token = await _project(make)
    spec = await _phone_channel(make, project.id)
    client, gateway = await app_client()
    device = await _register(client)

    assert await _action(client, token, "stop-message-queue") == {"status": 100,
                                                                  "message": "Success"}
    stopped = await gateway.store.get_channel(spec.id)
    assert stopped.paused and "stop-message-queue" in stopped.paused_reason
    queued = await _push(client, token, NUMBERS[:2])
    # The push restarted the queue (Picky: sending a new message restarts it).
    assert not (await gateway.store.get_channel(spec.id)).paused
    assert await _fetch(client, device) == queued

    await _action(client, token, "stop-message-queue")
    assert (await _status(client, token))["queue_stopped"] is True
    response = await client.post("/api/v2/device-action",
                                 data={"data": f'{{"token": "{token}", '
                                               f'"command": "resume-message-queue"}}'})
    assert response.json()["status"] == 100             # Picky's "normal POST" form
    assert not (await gateway.store.get_channel(spec.id)).paused

    # A pause of the operator's is theirs to lift.
    await gateway.store.update_channel(spec.id, paused=True, paused_reason="")
    refused = await _action(client, token, "resume-message-queue")
    assert refused["status"] == 412
    assert (await _action(client, token, "stop-message-queue"))["status"] == 100
    await _push(client, token, NUMBERS[2:3])
    assert (await gateway.store.get_channel(spec.id)).paused


async def test_a_stopped_queue_hands_phones_nothing_new(app_client, make) -> None:
    project, token = await _project(make)
    await _phone_channel(make, project.id, per_fetch=1)
    client, _gw = await app_client()
    device = await _register(client)
    ids = await _push(client, token, NUMBERS[:2])
    assert await _fetch(client, device) == ids[:1]
    await _action(client, token, "stop-message-queue")
    # What the phone already holds it is handed again (not acknowledged yet); nothing new.
    assert await _fetch(client, device) == ids[:1]
    await _action(client, token, "resume-message-queue")
    assert await _fetch(client, device) == ids


async def test_delete_message_queue_cancels_refunds_and_reports(app_client, make,
                                                                query) -> None:
    project, token = await _project(make, webhook_url="http://127.0.0.1:9/hook", credits="1")
    await _phone_channel(make, project.id, per_fetch=2)
    client, gateway = await app_client()
    device = await _register(client)
    ids = await _push(client, token, NUMBERS[:5])
    held = await _fetch(client, device)
    assert held == ids[:2]

    answer = await _action(client, token, "delete-message-queue")
    assert answer["status"] == 100 and answer["cancelled"] == 3 and answer["refunded"] == "0.03"
    states = dict(query("SELECT id, state FROM messages"))
    assert [states[int(i)] for i in ids] == ["sending", "sending", "cancelled", "cancelled",
                                             "cancelled"]
    balance = (await gateway.store.get_project(project.id)).balance_micro
    assert balance == parse_credits("1") - 2 * parse_credits("0.01")
    outbox = query("SELECT message_id, state, error_message FROM outbox ORDER BY message_id")
    assert [(str(r[0]), r[1]) for r in outbox] == [(i, "cancelled") for i in ids[2:]]
    assert all("delete-message-queue" in r[2] for r in outbox)
    assert (await _action(client, token, "delete-message-queue"))["cancelled"] == 0


async def test_reset_cancels_everything_and_unpairs_the_phones(app_client, make, query) -> None:
    project, token = await _project(make, credits="1")
    spec = await _phone_channel(make, project.id)
    client, gateway = await app_client()
    device = await _register(client)
    ids = await _push(client, token, NUMBERS[:3])
    await _fetch(client, device)
    await _push(client, token, NUMBERS[3:4])

    answer = await _action(client, token, "reset")
    assert answer["cancelled"] == 4 and answer["devices_revoked"] == 1
    assert answer["refunded"] == "0.04"
    assert {r[0] for r in query("SELECT state FROM messages")} == {"cancelled"}
    assert (await client.get(f"{API}/message", headers=_auth(device))).status_code == 401
    # A late report from the unpaired phone cannot revive anything.
    late = await client.patch(f"{API}/message", headers=_auth(device),
                              json=[{"id": ids[0], "state": "Sent"}])
    assert late.status_code == 401
    assert (await gateway.store.get_project(project.id)).balance_micro == parse_credits("1")
    after = await _status(client, token)
    assert after["status"] == "OFFLINE" and after["devices"] == []
    assert (await gateway.store.list_devices(spec.id))[0].revoked_at is not None


async def test_restart_asks_the_phones_to_reconnect(app_client, make, store) -> None:
    project, token = await _project(make)
    await _phone_channel(make, project.id)
    client, _gw = await app_client()
    nobody = await _action(client, token, "restart")
    assert nobody["status"] == 100 and nobody["devices"] == 0 and "no paired" in nobody["detail"]
    device = await _register(client)
    answer = await _action(client, token, "restart")
    assert answer["devices"] == 1
    stored = await store.get_device(device["id"])
    assert stored is not None and stored.reconnect_at > time.time() - 60


async def test_call_queue_commands_are_for_the_voice_channel(app_client, make, query) -> None:
    project, token = await _project(make, credits="5")
    calls = await make.channel(project.id, application=4, kind="test-status-probe",
                               price="0.05")
    await make.channel(project.id, application=1, kind="test-status-probe", price="0.01")
    client, gateway = await app_client()
    await _push(client, token, NUMBERS[:2], application="4")

    assert (await _action(client, token, "stop-call-queue", application=4))["status"] == 100
    assert (await gateway.store.get_channel(calls.id)).paused
    wrong_queue = await _action(client, token, "resume-message-queue", application=4)
    assert wrong_queue["status"] == 411
    assert (await _action(client, token, "resume-call-queue", application=4))["status"] == 100
    assert not (await gateway.store.get_channel(calls.id)).paused
    deleted = await _action(client, token, "delete-call-queue", application=4)
    assert deleted["cancelled"] == 2 and deleted["refunded"] == "0.1"

    assert (await _action(client, token, "stop-call-queue", application=1))["status"] == 411
    assert (await _action(client, token, "reset", application=1))["status"] == 411
    assert (await _action(client, token, "restart", application=1))["status"] == 411
    assert (await _action(client, token, "disconnect", application=1))["status"] == 411
    assert (await _action(client, token, "self-destruct", application=1))["status"] == 406
    assert (await _action(client, token, "stop-message-queue", application=1))["status"] == 100
    assert query("SELECT count(*) FROM messages WHERE state = 'cancelled'")[0][0] == 2
