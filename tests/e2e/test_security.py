"""End to end over a real ``pushgate serve``: bridge callbacks need the secret ``channel add``
printed; X-Forwarded-For counts only from a trusted proxy; wrong tokens from one address are
throttled while others go on; connections that trickle or send nothing are closed."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

from tests.e2e.harness import Harness
from tests.fakes.evolution import FakeEvolution
from tests.fakes.server import free_port
from tests.fakes.waha import FakeWaha

pytestmark = pytest.mark.slow

PERSON = "919812345678"


def _add_bridge(e2e: Harness, env: dict[str, str], kind: str, application: str,
                config: dict[str, object]) -> dict:
    return dict(e2e.cli_json("channel", "add", "--project", "school", "--type", kind,
                             "--application", application, "--config", json.dumps(config),
                             env=env))


async def test_bridge_callbacks_need_the_secret_channel_add_printed(e2e: Harness) -> None:
    port = free_port()
    env = e2e.env(PUSHGATE_PUBLIC_URL=f"http://127.0.0.1:{port}")
    e2e.cli("migrate")
    e2e.cli("project", "create", "school", "--credits", "1")
    waha = _add_bridge(e2e, env, "waha", "10", {"base_url": "http://127.0.0.1:9", "api_key": "k"})
    evolution = _add_bridge(e2e, env, "evolution", "1", {"base_url": "http://127.0.0.1:9",
                                                    "api_key": "k", "instance": "school"})
    opened = _add_bridge(e2e, env, "waha", "2", {"base_url": "http://127.0.0.1:9", "api_key": "k",
                                            "insecure_callbacks": True})
    e2e.serve(port=port, env=env)

    def inbound(channel: dict) -> list[str]:
        return [row[0] for row in e2e.query(
            "SELECT body FROM inbound_messages WHERE channel_id = ? ORDER BY id", channel["id"])]

    # WAHA: the key printed in the session's webhook setting signs; nothing else passes.
    fake = FakeWaha()
    hook = json.loads(waha["callback_setup"].split('"webhooks": ', 1)[1].split("\n", 1)[0])[0]
    url = hook["url"]
    assert url == waha["callback_url"] and url.startswith(f"http://127.0.0.1:{port}/")
    for key, text in ((None, "unsigned"), ("forged-key", "forged"),
                      (hook["hmac"]["key"], "signed")):
        fake.webhook_hmac_key = key
        expected = 200 if text == "signed" else 401
        assert await fake.emit(url, [fake.message_event(f"{PERSON}@c.us", text)]) == [expected]
    assert inbound(waha) == ["signed"]

    # Evolution: the printed URL carries the token; the bare callback URL is refused.
    evo = FakeEvolution()
    registered = json.loads(evolution["callback_setup"].splitlines()[1])["url"]
    assert await evo.emit(evolution["callback_url"],
                          [evo.upsert_event(PERSON, text="no token")]) == [401]
    assert await evo.emit(registered, [evo.upsert_event(PERSON, text="with token")]) == [200]
    assert inbound(evolution) == ["with token"]

    # A channel opened on purpose takes unsigned callbacks, and the log says so.
    fake.webhook_hmac_key = None
    assert await fake.emit(opened["callback_url"],
                           [fake.message_event(f"{PERSON}@c.us", "open")]) == [200]
    assert inbound(opened) == ["open"]
    e2e.wait_until(lambda: "insecure_callbacks is on" in e2e.procs[-1].output(), 10,
                   "the insecure channel's warning in the log")


def test_forwarded_for_and_guessing_over_real_connections(e2e: Harness) -> None:
    e2e.cli("migrate")
    e2e.cli("project", "create", "school", "--credits", "10")
    e2e.cli("channel", "add", "--project", "school", "--type", "sandbox")
    token = e2e.cli_json("token", "create", "--project", "school", "--ip", "192.0.2.0/24")["token"]
    push = {"token": token, "application": "1",
            "data": [{"number": "919876543210", "message": "Your OTP is 4711"}]}
    spoof = {"X-Forwarded-For": "192.0.2.10"}

    # Default: no proxy trusted, not even this host, so the header changes nothing.
    plain = e2e.serve(env=e2e.env(PUSHGATE_AUTH_FAILURE_LIMIT="3"))
    answer = httpx.post(f"{plain.base_url}/api/v2/push", json=push, headers=spoof, timeout=10)
    assert answer.json()["status"] == 403 and "127.0.0.1" in answer.json()["message"]
    # Guessing from here is throttled after three misses, the right token included.
    guesses = [httpx.post(f"{plain.base_url}/api/v2/push", json={**push, "token": f"g{i}"},
                          timeout=10) for i in range(4)]
    assert [g.json()["status"] for g in guesses] == [401, 401, 401, 429]
    assert int(guesses[-1].headers["Retry-After"]) > 0
    assert httpx.post(f"{plain.base_url}/api/v2/push", json=push,
                      timeout=10).status_code == 429

    # Behind a trusted proxy on this host, the forwarded address is the client's.
    proxied = e2e.serve(env=e2e.env(PUSHGATE_TRUSTED_PROXIES="127.0.0.1"), name="proxied")
    answer = httpx.post(f"{proxied.base_url}/api/v2/push", json=push, headers=spoof,
                        timeout=10)
    assert answer.json()["status"] == 100, answer.json()


def test_slow_and_idle_connections_are_closed(e2e: Harness) -> None:
    e2e.cli("migrate")
    server = e2e.serve(env=e2e.env(PUSHGATE_READ_TIMEOUT_SECONDS="1"))
    assert server.base_url is not None
    address = ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
    slow = [socket.create_connection(address, timeout=15) for _ in range(30)]
    try:
        for i, sock in enumerate(slow):
            if i % 3:   # two thirds start headers they never finish, a third send nothing
                sock.sendall(b"POST /api/v2/push HTTP/1.1\r\nHost: x\r\nContent-Le")
        # One more trickles a byte every 0.2 s, for longer than the timeout.
        trickler = socket.create_connection(address, timeout=15)
        slow.append(trickler)
        cut = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaa\r\n\r\n":
            try:
                trickler.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.2)
        # Meanwhile an honest client is served.
        assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        assert cut or trickler in slow
        for sock in slow:   # each closed by the server, none answered
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b"", "a slow connection got an answer"
    finally:
        for sock in slow:
            sock.close()
