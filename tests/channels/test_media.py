"""Signed media URLs and safe media download (``pushgate.channels.media``).

Downloads run against a tiny Starlette fake over real HTTP on 127.0.0.1 (with
``allow_private=True``, since that is a loopback address). Address checks with
``allow_private=False`` use literal IPs, a patched ``getaddrinfo`` or an ``httpx.MockTransport``,
so no test needs the network.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from pushgate.channels.base import ChannelEnv
from pushgate.channels.media import (
    MAX_REDIRECTS,
    MediaFetchError,
    fetch_media,
    is_forbidden_address,
    max_bytes_for,
    sign_media_url,
    verify_media_signature,
)
from pushgate.core.channels import MEDIA_MAX_BYTES, MediaKind

KEY = "test-secret"
PUBLIC_IP = "93.184.216.34"

# --- signed URLs ----------------------------------------------------------------------------


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_signed_url_round_trip() -> None:
    env = ChannelEnv(public_url="https://gw.example.com/", secret_key=KEY)
    url = sign_media_url(env, 42, 2_000_000_000)
    parts = urllib.parse.urlsplit(url)
    query = _query(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://gw.example.com/media/42"
    assert query["expires"] == "2000000000"
    assert "=" not in query["sig"] and len(query["sig"]) == 43   # 32 bytes, unpadded base64
    assert verify_media_signature(KEY, 42, query["expires"], query["sig"], now=1_999_999_999)


@pytest.mark.parametrize("media_id, expires, tamper_sig", [
    (43, "2000000000", False),      # another media
    (42, "2000000001", False),      # a later expiry
    (42, "2000000000", True),       # a changed signature
])
def test_tampered_signature_is_refused(media_id: int, expires: str, tamper_sig: bool) -> None:
    query = _query(sign_media_url(ChannelEnv(secret_key=KEY), 42, 2_000_000_000))
    sig = query["sig"]
    if tamper_sig:
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert not verify_media_signature(KEY, media_id, expires, sig, now=1_000)


def test_signature_of_another_key_is_refused() -> None:
    query = _query(sign_media_url(ChannelEnv(secret_key="other-key"), 42, 2_000_000_000))
    assert not verify_media_signature(KEY, 42, query["expires"], query["sig"], now=1_000)


def test_expired_signature_is_refused() -> None:
    query = _query(sign_media_url(ChannelEnv(secret_key=KEY), 42, 1_000))
    assert verify_media_signature(KEY, 42, query["expires"], query["sig"], now=999.5)
    assert not verify_media_signature(KEY, 42, query["expires"], query["sig"], now=1_000)
    assert not verify_media_signature(KEY, 42, query["expires"], query["sig"], now=5_000)


@pytest.mark.parametrize("expires, sig", [
    ("", None), ("abc", None), ("-5", None), ("2e9", None), ("²", None), ("9" * 5000, None),
    ("2000000000", ""), ("2000000000", "é" * 43),
])
def test_malformed_signature_is_refused(expires: str, sig: str | None) -> None:
    good = _query(sign_media_url(ChannelEnv(secret_key=KEY), 42, 2_000_000_000))["sig"]
    assert not verify_media_signature(KEY, 42, expires, good if sig is None else sig, now=1_000)


# --- the fake media server ------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
release_stalls = threading.Event()


async def ok(request: Request) -> Response:
    return Response(PNG, media_type="image/png")


async def with_params(request: Request) -> Response:
    return Response(b"%PDF-1.4", headers={"content-type": "Application/PDF; name=bill.pdf"})


async def echo_host(request: Request) -> Response:
    return PlainTextResponse(request.headers["host"])


async def declared_large(request: Request) -> Response:
    return Response(b"x" * 1000, media_type="video/mp4")


async def streamed_large(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 100
    # No Content-Length: the size is only known by reading.
    return StreamingResponse(chunks(), media_type="video/mp4")


async def redirect(request: Request) -> Response:
    hops = int(request.path_params["hops"])
    return RedirectResponse(f"/redirect/{hops - 1}" if hops > 1 else "/ok", status_code=302)


async def status(request: Request) -> Response:
    return PlainTextResponse("nope", status_code=int(request.path_params["code"]))


async def trickle(request: Request) -> Response:
    async def drip() -> AsyncIterator[bytes]:
        # Always a little more coming, so no single read ever times out; bounded so the
        # server can stop even if the client never goes away.
        deadline = time.monotonic() + 3
        while not release_stalls.is_set() and time.monotonic() < deadline:
            yield b"z"
            await asyncio.sleep(0.05)
    return StreamingResponse(drip(), media_type="audio/ogg")


fake_app = Starlette(routes=[
    Route("/ok", ok),
    Route("/params", with_params),
    Route("/host", echo_host),
    Route("/declared-large", declared_large),
    Route("/streamed-large", streamed_large),
    Route("/redirect/{hops}", redirect),
    Route("/status/{code}", status),
    Route("/trickle", trickle),
])


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    from tests.fakes.server import serve_app

    release_stalls.clear()
    with serve_app(fake_app) as base_url:
        yield base_url
        release_stalls.set()


async def fetch_local(url: str, max_bytes: int = 100_000, timeout: float = 3.0):
    return await fetch_media(url, max_bytes=max_bytes, timeout=timeout, allow_private=True)


# --- downloads from the fake ----------------------------------------------------------------

async def test_fetch_returns_body_and_content_type(media_server: str) -> None:
    media = await fetch_local(f"{media_server}/ok")
    assert media.data == PNG
    assert media.content_type == "image/png"
    params = await fetch_local(f"{media_server}/params")
    assert (params.data, params.content_type) == (b"%PDF-1.4", "application/pdf")


async def test_fetch_reuses_a_given_client(media_server: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            media = await fetch_media(f"{media_server}/ok", max_bytes=100_000, timeout=3,
                                      allow_private=True, client=client)
            assert media.data == PNG
        assert not client.is_closed


async def test_too_large_by_content_length_is_refused_before_reading(media_server: str) -> None:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_local(f"{media_server}/declared-large", max_bytes=500)
    assert not caught.value.retryable
    assert "1000 bytes" in caught.value.reason   # judged by the header, not by reading


async def test_too_large_without_content_length_is_cut_while_streaming(
        media_server: str) -> None:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_local(f"{media_server}/streamed-large", max_bytes=500)
    assert not caught.value.retryable
    assert "exceeds 500 bytes" in caught.value.reason
    # At the limit exactly, the same body is fine.
    media = await fetch_local(f"{media_server}/streamed-large", max_bytes=1000)
    assert media.data == b"y" * 1000


async def test_redirects_are_followed_up_to_the_limit(media_server: str) -> None:
    media = await fetch_local(f"{media_server}/redirect/{MAX_REDIRECTS}")
    assert media.data == PNG
    with pytest.raises(MediaFetchError) as caught:
        await fetch_local(f"{media_server}/redirect/{MAX_REDIRECTS + 1}")
    assert not caught.value.retryable
    assert "redirects" in caught.value.reason


async def test_404_is_permanent_and_503_retryable(media_server: str) -> None:
    with pytest.raises(MediaFetchError) as not_found:
        await fetch_local(f"{media_server}/status/404")
    assert not not_found.value.retryable
    with pytest.raises(MediaFetchError) as unavailable:
        await fetch_local(f"{media_server}/status/503")
    assert unavailable.value.retryable
    with pytest.raises(MediaFetchError) as rate_limited:
        await fetch_local(f"{media_server}/status/429")
    assert rate_limited.value.retryable


async def test_timeout_covers_the_whole_download(media_server: str) -> None:
    # The fake sends a byte every 50 ms: each read is quick, only the total is too long.
    with pytest.raises(MediaFetchError) as caught:
        await fetch_local(f"{media_server}/trickle", timeout=0.4)
    assert caught.value.retryable
    assert "exceeded" in caught.value.reason


async def test_connects_to_the_vetted_address_with_the_name_as_host(
        media_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = int(media_server.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def fake_getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        lookups.append(host)
        # 127.0.0.2 is loopback but nothing listens there: the next address must be tried.
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in ("127.0.0.2", "127.0.0.1")]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    media = await fetch_local(f"http://media.test:{port}/host")
    assert media.data == f"media.test:{port}".encode()
    assert lookups == ["media.test"]   # one lookup, nothing resolved behind our back


# --- address checks, no network ---------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.png", "http://10.1.2.3/a.png", "http://169.254.169.254/latest/",
    "http://[::1]/a.png", "http://[::ffff:127.0.0.1]/a.png", "https://192.168.1.10/a.png",
    "http://0.0.0.0/a.png", "http://100.64.0.1/a.png", "http://[fe80::1]/a.png",
    "http://[fd00::1]/a.png", "http://224.0.0.1/a.png", "http://[2002:7f00:1::]/a.png",
    "http://localhost:8000/a.png",
])
async def test_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(url, max_bytes=1000, timeout=2, allow_private=False)
    assert not caught.value.retryable
    assert "non-public" in caught.value.reason


@pytest.mark.parametrize("url", [
    "ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "not a url",
])
async def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(url, max_bytes=1000, timeout=2, allow_private=True)
    assert not caught.value.retryable


@pytest.mark.parametrize("address, forbidden", [
    ("8.8.8.8", False), ("2606:4700::1111", False), ("::ffff:8.8.8.8", False),
    ("64:ff9b::808:808", False), ("64:ff9b::a00:1", True), ("::ffff:10.0.0.1", True),
    ("172.16.0.1", True), ("ff02::1", True), ("::", True), ("240.0.0.1", True),
])
def test_address_classification(address: str, forbidden: bool) -> None:
    import ipaddress

    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden


def _mock_client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("target", [
    "http://127.0.0.1/secret", "http://10.0.0.5/secret", "http://169.254.169.254/latest/",
    "http://[::1]/secret", "http://[::ffff:127.0.0.1]/secret", "http://localhost/secret",
])
async def test_redirect_to_a_private_address_is_refused(target: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": target})

    async with _mock_client(handler) as client:
        with pytest.raises(MediaFetchError) as caught:
            await fetch_media(f"http://{PUBLIC_IP}/a.png", max_bytes=1000, timeout=2,
                              allow_private=False, client=client)
    assert not caught.value.retryable
    assert seen == [f"http://{PUBLIC_IP}/a.png"]   # the private target was never asked


async def test_redirect_to_another_scheme_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"location": "file:///etc/passwd"})

    async with _mock_client(handler) as client:
        with pytest.raises(MediaFetchError) as caught:
            await fetch_media(f"http://{PUBLIC_IP}/a.png", max_bytes=1000, timeout=2,
                              allow_private=False, client=client)
    assert not caught.value.retryable


async def test_https_request_goes_to_the_vetted_ip_with_name_in_host_and_sni(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_IP, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"img", headers={"content-type": "image/jpeg"})

    async with _mock_client(handler) as client:
        media = await fetch_media("https://cdn.example.com:8443/a.jpg?v=1", max_bytes=1000,
                                  timeout=2, allow_private=False, client=client)
    assert media.data == b"img"
    [request] = requests
    assert str(request.url) == f"https://{PUBLIC_IP}:8443/a.jpg?v=1"
    assert request.headers["host"] == "cdn.example.com:8443"
    assert request.extensions["sni_hostname"] == "cdn.example.com"


async def test_any_private_answer_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in (PUBLIC_IP, "10.0.0.7")]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("a host with a private address must not be contacted")

    async with _mock_client(handler) as client:
        with pytest.raises(MediaFetchError) as caught:
            await fetch_media("http://rebind.example/a.png", max_bytes=1000, timeout=2,
                              allow_private=False, client=client)
    assert not caught.value.retryable
    assert "10.0.0.7" in caught.value.reason


async def test_dns_failure_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_getaddrinfo(*args: object, **kwargs: object) -> list:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", failing_getaddrinfo)
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media("http://media.example/a.png", max_bytes=1000, timeout=2,
                          allow_private=False)
    assert caught.value.retryable


def test_max_bytes_follow_the_documented_limits() -> None:
    assert max_bytes_for("image") == MEDIA_MAX_BYTES[MediaKind.IMAGE]
    assert max_bytes_for("audio") == MEDIA_MAX_BYTES[MediaKind.AUDIO]
    assert max_bytes_for(None) == MEDIA_MAX_BYTES[MediaKind.DOCUMENT]
