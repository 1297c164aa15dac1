"""Picky's device-status for a WhatsApp Web bridge channel (application 10): the real WAHA and
Evolution connectors asked about their session, against the bridges' fakes over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fakes.evolution import FakeEvolution
from tests.fakes.server import serve_app
from tests.fakes.waha import FakeWaha


async def status(client: Any, token: str) -> dict[str, Any]:
    response = await client.post("/api/v2/device-status",
                                 json={"token": token, "application": 10})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("session", "expected"), [
    ("WORKING", "CONNECTED"), ("STARTING", "TIMEOUT"), ("SCAN_QR_CODE", "UNPAIRED"),
    ("FAILED", "OFFLINE")])
async def test_waha_session_state_is_the_device_state(app_client: Any, make: Any,
                                                      session: str, expected: str) -> None:
    fake = FakeWaha(me_id="919812345678@c.us")
    fake.session_status = session
    with serve_app(fake.app) as url:
        project, token, _ = await make.project()
        await make.channel(project.id, application=10, kind="waha", price="0.01",
                           config={"base_url": url, "api_key": fake.api_key})
        client, _ = await app_client()
        answer = await status(client, token)
    assert answer["status"] == expected
    assert answer["message_queue_count"] == 0 and answer["time"]
    if expected == "CONNECTED":
        assert answer["connected_number"] == "919812345678"
    else:
        assert session in answer["detail"]


async def test_evolution_instance_down_is_reported(app_client: Any, make: Any) -> None:
    fake = FakeEvolution()
    fake.connection_state = "close"
    with serve_app(fake.app) as url:
        project, token, _ = await make.project()
        await make.channel(project.id, application=10, kind="evolution", price="0.01",
                           config={"base_url": url, "api_key": fake.api_key,
                                   "instance": fake.instance})
        client, _ = await app_client()
        answer = await status(client, token)
    assert answer["status"] in ("UNPAIRED", "OFFLINE")
