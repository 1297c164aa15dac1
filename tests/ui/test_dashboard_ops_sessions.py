"""The dashboard's channels, phones and webhooks pages over an in-process app (every
backend): a project sees and acts on its own channels, phones and webhook reports only (an id
of another project's is answered 404 and left as it was), every action needs the session's
CSRF token, and pairing shows the values ``pushgate device pair`` prints, with QR codes."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from pushgate.core.devices import Device
from pushgate.core.models import InboundMessage
from tests.ui.test_dashboard_sessions import KEY, csrf_of, sign_in


async def _phone(gateway: Any, channel_id: int, project_id: int, name: str) -> Device:
    now = time.time()
    device = Device(id=f"dev{channel_id}x{name}", channel_id=channel_id, project_id=project_id,
                    name=name, created_at=now, last_seen_at=now)
    await gateway.store.register_device(device, f"hash-{device.id}")
    return device


async def _signed_in(app_client: Any, token: str) -> tuple[httpx.AsyncClient, Any, str]:
    client, gateway = await app_client(secret_key=KEY)
    await sign_in(client, token)
    page = await client.get("/ui/channels")
    return client, gateway, csrf_of(page.text)


async def test_channels_are_the_projects_own_and_pause_resume(app_client: Any,
                                                              make: Any) -> None:
    mine, token, _ = await make.project()
    theirs, _, _ = await make.project()
    own = await make.channel(mine.id)
    bridge = await make.channel(mine.id, application=8, kind="waha",
                                config={"base_url": "http://127.0.0.1:9",
                                        "webhook_hmac_key": "very-secret-hmac"})
    other = await make.channel(theirs.id)
    client, gateway, csrf = await _signed_in(app_client, token)
    page = (await client.get("/ui/channels")).text
    assert f'id="channel-{own.id}"' in page and f'id="channel-{other.id}"' not in page
    assert f"/channels/{own.id}/callback" in page
    assert f"{gateway.settings.gateway_url()}/channels/{bridge.id}/callback" in page
    assert "webhook_hmac_key" in page and "very-secret-hmac" not in page
    # Another project's channel: unknown, and not paused.
    answer = await client.post(f"/ui/channels/{other.id}/pause",
                               data={"csrf": csrf, "action": "pause"})
    assert answer.status_code == 404
    assert not (await gateway.store.get_channel(other.id)).paused
    # No CSRF token: refused.
    answer = await client.post(f"/ui/channels/{own.id}/pause", data={"action": "pause"})
    assert answer.status_code == 403 and not (await gateway.store.get_channel(own.id)).paused
    answer = await client.post(f"/ui/channels/{own.id}/pause",
                               data={"csrf": csrf, "action": "pause"})
    assert answer.status_code == 303
    stored = await gateway.store.get_channel(own.id)
    assert stored.paused and stored.paused_reason == "paused by operator"   # as the CLI's
    page = (await client.get("/ui/channels")).text
    assert re.search(rf'id="state-{own.id}">paused', page)
    assert f'id="resume-{own.id}"' in page
    await client.post(f"/ui/channels/{own.id}/pause", data={"csrf": csrf, "action": "resume"})
    assert not (await gateway.store.get_channel(own.id)).paused


async def test_phones_of_another_project_cannot_be_seen_revoked_or_paired(app_client: Any,
                                                                          make: Any) -> None:
    mine, token, _ = await make.project()
    theirs, _, _ = await make.project()
    client, gateway, csrf = await _signed_in(app_client, token)
    empty = (await client.get("/ui/phones")).text
    assert "no phone channel" in empty
    own = await make.channel(mine.id, application=3, kind="android")
    other = await make.channel(theirs.id, application=3, kind="android")
    assert "No phones yet — pair one below" in (await client.get("/ui/phones")).text
    my_phone = await _phone(gateway, own.id, mine.id, "mine")
    their_phone = await _phone(gateway, other.id, theirs.id, "theirs")
    page = (await client.get("/ui/phones")).text
    assert my_phone.id in page and their_phone.id not in page
    answer = await client.post(f"/ui/phones/{their_phone.id}/revoke", data={"csrf": csrf})
    assert answer.status_code == 404
    assert (await gateway.store.get_device(their_phone.id)).revoked_at is None
    answer = await client.post("/ui/phones/pair", data={"csrf": csrf, "channel": str(other.id)})
    assert answer.status_code == 404
    assert "private_token" not in (await gateway.store.get_channel(other.id)).config
    # Mine: revoked, with the CLI's call.
    assert (await client.post(f"/ui/phones/{my_phone.id}/revoke",
                              data={"csrf": "wrong"})).status_code == 403
    answer = await client.post(f"/ui/phones/{my_phone.id}/revoke", data={"csrf": csrf})
    assert answer.status_code == 303
    assert (await gateway.store.get_device(my_phone.id)).revoked_at is not None


async def test_pairing_shows_the_api_url_and_token_with_qr_codes(app_client: Any,
                                                                 make: Any) -> None:
    mine, token, _ = await make.project()
    own = await make.channel(mine.id, application=3, kind="android")
    client, gateway, csrf = await _signed_in(app_client, token)
    answer = await client.post("/ui/phones/pair", data={
        "csrf": csrf, "channel": str(own.id), "server_url": "https://gw.example.com/"})
    assert answer.status_code == 200
    stored = (await gateway.store.get_channel(own.id)).config["private_token"]
    assert f'id="pair-token">{stored}<' in answer.text
    assert 'id="pair-url">https://gw.example.com/api/mobile/v1<' in answer.text
    assert answer.text.count('<svg') == 2 and "QR code of the private token" in answer.text
    # Shown once: the page itself does not show the token.
    assert stored not in (await client.get("/ui/phones")).text
    # Asked again: the same token (phones pair with it), unless a new one is asked for.
    again = await client.post("/ui/phones/pair", data={"csrf": csrf, "channel": str(own.id)})
    assert f'id="pair-token">{stored}<' in again.text
    assert f'id="pair-url">{gateway.settings.gateway_url()}/api/mobile/v1<' in again.text
    rotated = await client.post("/ui/phones/pair", data={"csrf": csrf, "channel": str(own.id),
                                                         "rotate": "on"})
    assert stored not in rotated.text
    assert (await gateway.store.get_channel(own.id)).config["private_token"] != stored


async def test_webhook_reports_of_another_project_cannot_be_seen_or_retried(
        app_client: Any, make: Any) -> None:
    mine, token, _ = await make.project()
    theirs, _, _ = await make.project()
    client, gateway, csrf = await _signed_in(app_client, token)
    assert "Nothing waiting" in (await client.get("/ui/webhooks")).text
    store = gateway.store
    now = time.time()
    ids = {}
    for project in (mine, theirs):
        await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
        channel = await make.channel(project.id, application=8)
        await store.record_inbound([InboundMessage(
            channel_id=channel.id, number=f"9198000{project.id:05d}", text="hi",
            provider_id=f"in-{project.id}", at=now)], now)
        [item] = await store.claim_inbound(10, now, 30)
        await store.retry_inbound([item.id], now, [600.0])
        ids[project.id] = item.id
    page = (await client.get("/ui/webhooks")).text
    assert "http://127.0.0.1:9/in" in page
    assert f'id="delivery-incoming-{ids[mine.id]}"' in page
    assert f'id="delivery-incoming-{ids[theirs.id]}"' not in page
    answer = await client.post("/ui/webhooks/retry", data={
        "csrf": csrf, "kind": "incoming", "id": str(ids[theirs.id])})
    assert answer.status_code == 404
    assert await store.claim_inbound(10, now + 1, 30) == []     # theirs still waits
    assert (await client.post("/ui/webhooks/retry", data={"kind": "incoming",
                                                          "id": str(ids[mine.id])})
            ).status_code == 403
    answer = await client.post("/ui/webhooks/retry", data={
        "csrf": csrf, "kind": "incoming", "id": str(ids[mine.id])})
    assert answer.status_code == 303
    [again] = await store.claim_inbound(10, time.time() + 1, 30)
    assert again.id == ids[mine.id]
