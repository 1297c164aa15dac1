"""Guessing and address spoofing: wrong API tokens and phone private tokens are throttled per
client address (429 + Retry-After) without slowing anyone else, and X-Forwarded-For moves the
client address only when the peer is a trusted proxy (the app as ``serve`` wraps it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from pushgate.api.auth import FailureThrottle
from pushgate.api.gateway import create_app
from pushgate.api.server import uvicorn_options
from pushgate.config import Settings
from pushgate.core.errors import ApiError, Code
from pushgate.core.tokens import hash_token

API = "/api/mobile/v1"
Clients = Callable[..., httpx.AsyncClient]


# --- the throttle alone -------------------------------------------------------------------------

def test_an_address_waits_once_it_failed_limit_times_within_the_window() -> None:
    throttle = FailureThrottle(limit=3, window=60.0)
    for at in (0.0, 10.0):
        throttle.failed("203.0.113.7", now=at)
    assert throttle.retry_after("203.0.113.7", now=11.0) is None
    throttle.failed("203.0.113.7", now=20.0)

    assert throttle.retry_after("203.0.113.7", now=21.0) == pytest.approx(39.0)
    with pytest.raises(ApiError) as refused:
        throttle.check("203.0.113.7", now=21.0)
    assert refused.value.code is Code.RATE_LIMITED and refused.value.extra["retry_after"] == 39
    assert throttle.retry_after("203.0.113.8", now=21.0) is None   # others are not affected
    # Sliding: the first failure leaves the window at 60 s, and one more failure is allowed.
    assert throttle.retry_after("203.0.113.7", now=60.0) is None
    throttle.failed("203.0.113.7", now=61.0)
    assert throttle.retry_after("203.0.113.7", now=62.0) == pytest.approx(8.0)


def test_old_failures_do_not_add_up() -> None:
    throttle = FailureThrottle(limit=3, window=60.0)
    for at in (0.0, 100.0, 200.0, 300.0, 400.0):
        throttle.failed("198.51.100.1", now=at)
    assert throttle.retry_after("198.51.100.1", now=401.0) is None


def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    throttle = FailureThrottle(limit=2, window=60.0)
    throttle.failed("2001:db8:1:2::1", now=0.0)
    throttle.failed("2001:db8:1:2:ffff::9", now=1.0)
    assert throttle.retry_after("2001:db8:1:2::abcd", now=2.0) is not None
    assert throttle.retry_after("2001:db8:1:3::1", now=2.0) is None
    throttle.failed("::ffff:192.0.2.1", now=0.0)
    throttle.failed("192.0.2.1", now=1.0)
    assert throttle.retry_after("192.0.2.1", now=2.0) is not None


def test_memory_is_bounded_and_zero_turns_it_off() -> None:
    throttle = FailureThrottle(limit=5, window=60.0, max_addresses=100)
    for i in range(1000):
        for _ in range(7):
            throttle.failed(f"10.0.{i // 256}.{i % 256}", now=1.0)
    assert len(throttle._failures) == 100
    assert all(len(times) == 5 for times in throttle._failures.values())
    off = FailureThrottle(limit=0, window=60.0)
    for _ in range(100):
        off.failed("10.0.0.1", now=1.0)
    assert off.retry_after("10.0.0.1", now=2.0) is None and not off._failures


# --- through the app ----------------------------------------------------------------------------

@pytest.fixture
async def clients(db_url: str) -> AsyncIterator[Any]:
    """``await clients(**settings)`` → a function making an httpx client that reaches the app,
    wrapped as ``serve`` wraps it, from a given peer address."""
    contexts: list[Any] = []
    made: list[httpx.AsyncClient] = []

    async def start(**overrides: Any) -> Clients:
        settings = Settings(database_url=db_url, **overrides)
        app = create_app(settings, run_workers=False)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        config = uvicorn.Config(app, **uvicorn_options(settings))
        config.load()

        def client(peer: str = "127.0.0.1") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=config.loaded_app, client=(peer, 40000))
            made.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
            return made[-1]

        return client

    yield start
    for client in made:
        await client.aclose()
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)


def _push(token: str) -> dict[str, Any]:
    return {"token": token, "application": "1",
            "data": [{"number": "919876543210", "message": "Your OTP is 4711"}]}


async def test_wrong_api_tokens_are_throttled_per_address(clients: Any, make: Any) -> None:
    client = await clients(auth_failure_limit=5, auth_failure_window_seconds=600)
    project, token, _ = await make.project()
    await make.channel(project.id)
    guesser, honest = client("198.51.100.66"), client("198.51.100.10")

    # Successes do not count: they neither use up nor reset an address's allowance.
    for _ in range(3):
        assert (await guesser.post("/api/v2/push", json=_push(token))).json()["status"] == 100
    guesses = [await guesser.post("/api/v2/push", json=_push(f"guess-{i}")) for i in range(6)]

    assert [r.json()["status"] for r in guesses] == [401] * 5 + [429]
    assert "Retry-After" not in guesses[0].headers
    refused = guesses[-1]
    assert refused.status_code == 429 and 590 <= int(refused.headers["Retry-After"]) <= 600
    # Blocked before the token is read: the right one waits too, on every authenticated route.
    right = await guesser.post("/api/v2/push", json=_push(token))
    assert right.status_code == 429 and right.json()["status"] == 429
    report = await guesser.get("/api/v2/pushes/1", headers={"Authorization": f"Bearer {token}"})
    assert report.status_code == 429
    # Another address is not slowed, and its own guesses are its own.
    assert (await honest.post("/api/v2/push", json=_push(token))).json()["status"] == 100
    assert (await honest.post("/api/v2/push", json=_push("nope"))).json()["status"] == 401


async def test_no_token_and_wrong_address_are_not_guesses(clients: Any, make: Any,
                                                          store: Any) -> None:
    client = await clients(auth_failure_limit=2)
    project, _, _ = await make.project()
    fenced = "fenced-token-0123456789"
    await store.create_token(project.id, hash_token(fenced), "t", ["10.0.0.0/8"])
    caller = client("198.51.100.5")
    for _ in range(4):
        assert (await caller.post("/api/v2/push", json=_push(""))).json()["status"] == 401
        assert (await caller.post("/api/v2/push", json=_push(fenced))).json()["status"] == 403


async def test_wrong_private_tokens_are_throttled_per_address(clients: Any, make: Any) -> None:
    client = await clients(auth_failure_limit=3)
    project, _, _ = await make.project()
    await make.channel(project.id, application=3, kind="android",
                       config={"private_token": "the-private-token-0123"})
    guesser, phone = client("203.0.113.50"), client("203.0.113.51")

    answers = [await guesser.post(f"{API}/device", json={"name": "x"},
                                  headers={"Authorization": f"Bearer guess-{i}"})
               for i in range(4)]

    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert 590 <= int(answers[-1].headers["Retry-After"]) <= 600
    right = {"Authorization": "Bearer the-private-token-0123"}
    assert (await guesser.post(f"{API}/device", json={"name": "x"}, headers=right)
            ).status_code == 429
    assert (await phone.post(f"{API}/device", json={"name": "Pixel"}, headers=right)
            ).status_code == 201


# --- proxies ------------------------------------------------------------------------------------

async def _fenced(make: Any, store: Any) -> str:
    project, _, _ = await make.project()
    await make.channel(project.id)
    token = "fenced-token-abcdefghij"
    await store.create_token(project.id, hash_token(token), "t", ["192.0.2.0/24"])
    return token


async def test_forwarded_for_is_ignored_from_untrusted_peers(clients: Any, make: Any,
                                                             store: Any) -> None:
    """By default no proxy is trusted, not even one on this host (uvicorn trusts 127.0.0.1)."""
    client = await clients()
    token = await _fenced(make, store)
    spoofed = {"X-Forwarded-For": "192.0.2.10"}
    for peer in ("127.0.0.1", "203.0.113.9"):
        answer = await client(peer).post("/api/v2/push", json=_push(token), headers=spoofed)
        assert answer.json()["status"] == 403, answer.json()
        assert peer in answer.json()["message"]
    device = await client("127.0.0.1").get(f"{API}/device", headers=spoofed)
    assert device.json()["externalIp"] == "127.0.0.1"


async def test_forwarded_for_is_the_client_behind_a_trusted_proxy(clients: Any, make: Any,
                                                                  store: Any) -> None:
    client = await clients(trusted_proxies="10.1.0.0/16, 127.0.0.1")
    token = await _fenced(make, store)
    proxy = client("10.1.2.3")

    allowed = await proxy.post("/api/v2/push", json=_push(token),
                               headers={"X-Forwarded-For": "192.0.2.10"})
    assert allowed.json()["status"] == 100, allowed.json()
    # The proxy appends the real peer: a client's own X-Forwarded-For cannot choose it.
    spoofed = await proxy.post("/api/v2/push", json=_push(token),
                               headers={"X-Forwarded-For": "192.0.2.10, 203.0.113.9"})
    assert spoofed.json()["status"] == 403 and "203.0.113.9" in spoofed.json()["message"]
    # A peer that is no trusted proxy is itself the client.
    direct = await client("10.2.0.1").post("/api/v2/push", json=_push(token),
                                           headers={"X-Forwarded-For": "192.0.2.10"})
    assert direct.json()["status"] == 403 and "10.2.0.1" in direct.json()["message"]


async def test_guess_throttling_sees_the_client_behind_the_proxy(clients: Any,
                                                                 make: Any) -> None:
    client = await clients(trusted_proxies="10.1.0.0/16", auth_failure_limit=2)
    project, token, _ = await make.project()
    await make.channel(project.id)
    proxy = client("10.1.2.3")

    def via(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    for _ in range(2):
        await proxy.post("/api/v2/push", json=_push("guess"), headers=via("203.0.113.1"))
    blocked = await proxy.post("/api/v2/push", json=_push(token), headers=via("203.0.113.1"))
    other = await proxy.post("/api/v2/push", json=_push(token), headers=via("203.0.113.2"))
    assert blocked.status_code == 429 and other.json()["status"] == 100


def test_trusted_proxies_must_be_addresses() -> None:
    assert Settings(trusted_proxies="").trusted_proxy_list() == []
    # A network written with host bits would be a "name" to uvicorn, trusted for nothing.
    assert Settings(trusted_proxies="10.0.0.1/8, ::1").trusted_proxy_list() == [
        "10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError, match="proxy.example"):
        Settings(trusted_proxies="10.0.0.1, proxy.example")


def test_serve_trusts_no_proxy_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")   # uvicorn's own variable changes nothing
    options = uvicorn_options(Settings())
    assert options["proxy_headers"] is False and options["forwarded_allow_ips"] == []
    config = uvicorn.Config(lambda *a: None, **options)
    assert config.forwarded_allow_ips == []
