"""``channels/transport.py``: one interface over the lean pool and httpx, chosen by whether the
environment names a proxy; both answer the same way and call ``before_send`` once per request,
after the connection is open and before the request is written."""

from __future__ import annotations

import httpx
import pytest

from pushgate.channels.http1 import Http1Pool
from pushgate.channels.transport import HttpxTransport, Transport, open_transport
from tests.channels.test_http1 import Server, server  # noqa: F401  (the fixture)


@pytest.mark.parametrize("proxy", [False, True])
async def test_both_transports_answer_alike_and_call_before_send(
        server: Server, proxy: bool, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        # Only the choice is tested here: the server is local, so no request uses the proxy.
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    transport: Transport = open_transport(server.url, headers={"Authorization": "Bearer t0k"})
    assert isinstance(transport, HttpxTransport if proxy else Http1Pool)
    calls: list[int] = []

    async def before_send() -> None:
        calls.append(server.connections)

    try:
        for i in range(3):
            response = await transport.post("/send", content=b'{"n": %d}' % i,
                                            headers={"Content-Type": "application/json"},
                                            before_send=before_send)
            assert response.status_code == 200
            assert response.json() == {"got": f'{{"n": {i}}}'}
            assert response.headers["content-type"] == "application/json"
    finally:
        await transport.aclose()
    # Called once per request, each time with the (one, reused) connection already open.
    assert calls == [1, 1, 1]
    assert [r.target for r in server.requests] == ["/v1/send"] * 3
    assert server.requests[0].headers["authorization"] == "Bearer t0k"


async def test_a_shared_httpx_client_is_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    client = httpx.AsyncClient(base_url="https://graph.example.com")
    transport = open_transport("https://graph.example.com", httpx_client=lambda: client)
    assert isinstance(transport, HttpxTransport) and transport.client is client
    await transport.aclose()
    assert not client.is_closed
    await client.aclose()
