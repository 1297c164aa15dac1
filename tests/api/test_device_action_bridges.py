"""Picky's device-action on WhatsApp Web bridge channels (WAHA, Evolution API): each command
reaches the bridge's session API through the connector, against the bridges' fakes over HTTP;
commands a bridge has no API for, bridge refusals and a bridge that is down answer their codes
with nothing done."""

from __future__ import annotations

from typing import Any

import pytest
from tests.fakes.evolution import FakeEvolution
from tests.fakes.server import free_port, serve_app
from tests.fakes.waha import FakeWaha

NUMBERS = ["919876500001", "919876500002"]


async def action(client: Any, token: str, command: str, expect_http: int = 200
                 ) -> dict[str, Any]:
    response = await client.post("/api/v2/device-action",
                                 json={"token": token, "command": command, "application": 10})
    assert response.status_code == expect_http, response.text
    return response.json()


async def waha_channel(make: Any, url: str, fake: FakeWaha) -> tuple[Any, str, Any]:
    project, token, _ = await make.project(credits="10")
    channel = await make.channel(project.id, application=10, kind="waha", price="0.01",
                                 config={"base_url": url, "api_key": fake.api_key})
    return project, token, channel


async def evolution_channel(make: Any, url: str, fake: FakeEvolution) -> tuple[Any, str, Any]:
    project, token, _ = await make.project(credits="10")
    channel = await make.channel(project.id, application=10, kind="evolution", price="0.01",
                                 config={"base_url": url, "api_key": fake.api_key,
                                         "instance": fake.instance})
    return project, token, channel


@pytest.mark.parametrize(("command", "path", "after"), [
    ("restart", "/api/sessions/default/restart", "WORKING"),
    ("disconnect", "/api/sessions/default/logout", "SCAN_QR_CODE"),
])
async def test_waha_commands_reach_the_sessions_api(app_client: Any, make: Any, command: str,
                                                    path: str, after: str) -> None:
    fake = FakeWaha()
    with serve_app(fake.app) as url:
        _project, token, _channel = await waha_channel(make, url, fake)
        client, _ = await app_client()
        answer = await action(client, token, command)
    assert answer["status"] == 100 and answer["message"] == "Success", answer
    assert answer["bridge_request"] == f"POST {path}"
    assert after in answer["detail"]
    calls = fake.requests_to(path)
    assert [c.method for c in calls] == ["POST"]
    assert calls[0].headers["x-api-key"] == fake.api_key
    assert fake.session_status == after
    assert fake.sent == []


@pytest.mark.parametrize(("command", "method", "path", "after"), [
    ("restart", "POST", "/instance/restart/shop", "open"),
    ("disconnect", "DELETE", "/instance/logout/shop", "close"),
])
async def test_evolution_commands_reach_the_instance_api(app_client: Any, make: Any,
                                                         command: str, method: str, path: str,
                                                         after: str) -> None:
    fake = FakeEvolution()
    with serve_app(fake.app) as url:
        _project, token, _channel = await evolution_channel(make, url, fake)
        client, _ = await app_client()
        answer = await action(client, token, command)
    assert answer["status"] == 100, answer
    assert answer["bridge_request"] == f"{method} {path}"
    calls = fake.requests_to(path)
    assert [c.method for c in calls] == [method]
    assert calls[0].headers["apikey"] == fake.api_key
    assert fake.connection_state == after
    if command == "disconnect":
        assert "Instance logged out" in answer["detail"]


async def _queued(client: Any, token: str, count: int) -> None:
    # A stopped queue keeps the pushes queued: nothing goes to the bridge before the reset.
    assert (await action(client, token, "stop-message-queue"))["status"] == 100
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "10", "globalmessage": "hello",
        "data": [{"number": n} for n in NUMBERS[:count]]})
    assert response.json()["status"] == 100, response.text


@pytest.mark.parametrize("bridge", ["waha", "evolution"])
async def test_reset_restarts_the_session_then_deletes_the_queue(app_client: Any, make: Any,
                                                                 query: Any,
                                                                 bridge: str) -> None:
    fake: FakeWaha | FakeEvolution = FakeWaha() if bridge == "waha" else FakeEvolution()
    with serve_app(fake.app) as url:
        if isinstance(fake, FakeWaha):
            _project, token, _channel = await waha_channel(make, url, fake)
            path = "/api/sessions/default/restart"
        else:
            _project, token, _channel = await evolution_channel(make, url, fake)
            path = "/instance/restart/shop"
        client, _ = await app_client()
        await _queued(client, token, 2)
        answer = await action(client, token, "reset")
    assert answer["status"] == 100, answer
    assert answer["bridge_request"] == f"POST {path}"
    assert answer["cancelled"] == 2 and answer["refunded"] == "0.02"
    assert [c.method for c in fake.requests_to(path)] == ["POST"]
    assert query("SELECT count(*) FROM messages WHERE state = 'cancelled'")[0][0] == 2


@pytest.mark.parametrize("bridge", ["waha", "evolution"])
@pytest.mark.parametrize("command", ["restart-server", "clearlogs"])
async def test_commands_a_bridge_has_no_api_for_are_refused(app_client: Any, make: Any,
                                                            bridge: str, command: str) -> None:
    fake: FakeWaha | FakeEvolution = FakeWaha() if bridge == "waha" else FakeEvolution()
    with serve_app(fake.app) as url:
        if isinstance(fake, FakeWaha):
            _project, token, channel = await waha_channel(make, url, fake)
        else:
            _project, token, channel = await evolution_channel(make, url, fake)
        client, _ = await app_client()
        answer = await action(client, token, command, expect_http=422)
    assert answer["status"] == 411, answer
    assert f"`{command}`" in answer["message"] and f"a {bridge} channel" in answer["message"]
    assert str(channel.id) in answer["message"]
    assert fake.requests == []


@pytest.mark.parametrize("bridge", ["waha", "evolution"])
async def test_a_refused_reset_leaves_the_queue(app_client: Any, make: Any, query: Any,
                                                bridge: str) -> None:
    fake: FakeWaha | FakeEvolution = FakeWaha() if bridge == "waha" else FakeEvolution()
    with serve_app(fake.app) as url:
        if isinstance(fake, FakeWaha):
            _project, token, _channel = await waha_channel(make, url, fake)
        else:
            _project, token, _channel = await evolution_channel(make, url, fake)
        client, _ = await app_client()
        await _queued(client, token, 2)
        fake.fail_next_command(1, 500)
        answer = await action(client, token, "reset", expect_http=502)
        assert answer["status"] == 430, answer
        assert "HTTP 500" in answer["message"] and "`reset`" in answer["message"]
        assert query("SELECT count(*) FROM messages WHERE state = 'queued'")[0][0] == 2
        # A wrong API key is the bridge's refusal too, with its own words.
        fake.fail_next_command(1, 401)
        refused = await action(client, token, "restart", expect_http=502)
    assert refused["status"] == 430 and "HTTP 401" in refused["message"]


async def test_evolution_disconnect_of_a_closed_instance_gives_evolution_s_reason(
        app_client: Any, make: Any) -> None:
    fake = FakeEvolution()
    fake.connection_state = "close"
    with serve_app(fake.app) as url:
        _project, token, _channel = await evolution_channel(make, url, fake)
        client, _ = await app_client()
        answer = await action(client, token, "disconnect", expect_http=502)
    assert answer["status"] == 430
    assert 'The "shop" instance is not connected' in answer["message"]


async def test_waha_unknown_session_is_the_bridge_s_refusal(app_client: Any, make: Any) -> None:
    fake = FakeWaha(session="other")
    with serve_app(fake.app) as url:
        _project, token, _channel = await waha_channel(make, url, fake)
        client, _ = await app_client()
        answer = await action(client, token, "restart", expect_http=502)
    assert answer["status"] == 430 and "HTTP 404" in answer["message"]
    assert "'default' does not exist" in answer["message"]


@pytest.mark.parametrize("bridge", ["waha", "evolution"])
async def test_a_bridge_that_is_down_is_unreachable(app_client: Any, make: Any, query: Any,
                                                    bridge: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    project, token, _ = await make.project(credits="10")
    config: dict[str, Any] = {"base_url": url, "api_key": "k", "timeout_seconds": 2}
    if bridge == "evolution":
        config["instance"] = "shop"
    await make.channel(project.id, application=10, kind=bridge, price="0.01", config=config)
    client, _ = await app_client()
    await _queued(client, token, 1)
    for command in ("restart", "disconnect", "reset"):
        answer = await action(client, token, command, expect_http=504)
        assert answer["status"] == 431, answer
        assert f"`{command}`" in answer["message"] and bridge in answer["message"]
    assert query("SELECT count(*) FROM messages WHERE state = 'queued'")[0][0] == 1


async def test_bridge_commands_on_other_channels_name_the_kind(app_client: Any,
                                                               make: Any) -> None:
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=10, kind="sandbox", price="0")
    client, _ = await app_client()
    for command in ("disconnect", "restart-server", "clearlogs", "restart", "reset"):
        answer = await action(client, token, command, expect_http=422)
        assert answer["status"] == 411, answer
        assert f"`{command}`" in answer["message"] and "sandbox channel" in answer["message"]
