"""One small interface for a connector's hot send path over HTTP, whichever client carries it.

Two clients exist: ``channels/http1.py`` (``Http1Pool``, a lean HTTP/1.1 keep-alive pool, cheap
in CPU per request, but with no proxy support) and httpx (proxies and everything else, at a much
higher CPU cost per request; why that matters: docs/benchmarks.md). ``open_transport`` picks
one — httpx only when the environment names a proxy, which only httpx honours — and the
connector talks to a ``Transport`` without knowing which.

Both raise httpx's exception types (``httpx.TimeoutException``, ``httpx.HTTPError`` …) and
answer with a ``TransportResponse`` (the reading side of ``httpx.Response``), so errors are
handled once. ``before_send`` is awaited with the connection in hand, right before the request
is written (a rate limiter's permit): the pool calls it itself, httpx through httpcore's
``trace`` hook.

Status checks, media downloads and other rare calls keep using an ``httpx.AsyncClient``
directly: only the send path is worth the lean client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx

from pushgate.channels.http1 import Http1Pool, proxy_configured

BeforeSend = Callable[[], Awaitable[None]]


class TransportResponse(Protocol):
    """What a connector reads of an answer (``httpx.Response`` and ``Http1Response`` both)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class Transport(Protocol):
    """Requests to paths under one base URL, with the transport's default headers."""

    async def post(self, path: str, *, content: bytes = b"",
                   headers: dict[str, str] | None = None,
                   before_send: BeforeSend | None = None) -> TransportResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    """A ``Transport`` over an ``httpx.AsyncClient`` (its ``base_url`` and default headers set).

    ``owns_client`` says whether ``aclose`` closes the client: a connector that also uses the
    client for its status and media calls closes it itself."""

    def __init__(self, client: httpx.AsyncClient, *, owns_client: bool = True) -> None:
        self.client = client
        self.owns_client = owns_client

    async def post(self, path: str, *, content: bytes = b"",
                   headers: dict[str, str] | None = None,
                   before_send: BeforeSend | None = None) -> TransportResponse:
        extensions: dict[str, Any] = {}
        if before_send is not None:
            async def trace(event: str, info: dict[str, Any]) -> None:
                # Called after any wait for a pooled connection or a new one's connect and TLS
                # handshake, just before the request line and headers are written.
                if event.endswith("send_request_headers.started"):
                    await before_send()

            extensions["trace"] = trace
        return await self.client.post(path, content=content, headers=headers,
                                      extensions=extensions)

    async def aclose(self) -> None:
        if self.owns_client:
            await self.client.aclose()


def open_transport(base_url: str, *, headers: dict[str, str] | None = None,
                   timeout: float = 20.0, connect_timeout: float = 5.0,
                   max_connections: int = 64,
                   httpx_client: Callable[[], httpx.AsyncClient] | None = None) -> Transport:
    """The lean pool for ``base_url``, or httpx when a proxy is configured.

    ``httpx_client``, when given, supplies the connector's own client (already set up with the
    same base URL and headers) for the proxy case, shared with its other calls and closed by
    the connector; otherwise a client of the transport's own is made."""
    if proxy_configured():
        if httpx_client is not None:
            return HttpxTransport(httpx_client(), owns_client=False)
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        client = httpx.AsyncClient(
            base_url=base_url, headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, connect_timeout)), limits=limits)
        return HttpxTransport(client)
    return Http1Pool(base_url, headers=headers, timeout=timeout,
                     connect_timeout=connect_timeout, max_connections=max_connections)
