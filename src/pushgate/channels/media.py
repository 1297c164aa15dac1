"""Media for connectors: signed gateway URLs for inline uploads, and safe download of URLs.

Inline media (``globalmedia_code``) lives in the ``media`` table, but WhatsApp Cloud and the
bridges take links. ``sign_media_url`` gives them an expiring, HMAC-signed URL of this gateway
(``/media/{id}?expires=..&sig=..``) that the ``/media`` route checks with
``verify_media_signature``; nothing else is needed to serve it, and a leaked link dies on its own.

Connectors that need the bytes behind a customer's URL (to upload them to a provider) use
``fetch_media``. The URL comes from an API caller, so fetching it naively would let anyone make
the gateway read its own network (cloud metadata at 169.254.169.254, admin ports on localhost):
every host is resolved once, refused if any address is not public, and the request goes to the
vetted address itself so a second DNS answer cannot swap it (DNS rebinding; the resolving and
pinning live in ``pushgate.outbound``, shared with the webhook deliverer). Redirects are
followed by hand and re-checked, the body is capped while streaming, and one deadline covers
the whole download.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from pushgate.channels.base import ChannelEnv
from pushgate.core.addresses import IPAddress
from pushgate.core.addresses import is_forbidden_address as is_forbidden_address  # re-exported
from pushgate.core.channels import MEDIA_MAX_BYTES, MediaKind
from pushgate.outbound import AddressRefused, default_port, resolve_public, send_pinned

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Client errors that say "later", not "never".
_RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


# --- signed gateway URLs ----------------------------------------------------------------------

def _media_signature(secret_key: str, subject: int | str, expires: str) -> str:
    digest = hmac.new(secret_key.encode(), f"{subject}.{expires}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def inbound_media_subject(channel_id: int, ref: str) -> str:
    """What a link to a user's media (received on ``channel_id``, ``ref`` the provider's media
    id) signs: never equal to an inline media id, so one link cannot stand for the other."""
    return f"inbound/{channel_id}/{ref}"


def sign_inbound_media_url(env: ChannelEnv, channel_id: int, ref: str, expires_at: int) -> str:
    """The gateway URL serving a user's media, fetched from the provider with the channel's
    credentials when the link is followed (the provider's own URL needs them)."""
    expires = str(int(expires_at))
    sig = _media_signature(env.secret_key, inbound_media_subject(channel_id, ref), expires)
    return (f"{env.public_url.rstrip('/')}/channels/{channel_id}/inbound-media/"
            f"{quote(ref, safe='')}?expires={expires}&sig={sig}")


def sign_media_url(env: ChannelEnv, media_id: int, expires_at: int) -> str:
    """The gateway URL serving inline media ``media_id`` until ``expires_at`` (unix seconds)."""
    expires = str(int(expires_at))
    sig = _media_signature(env.secret_key, media_id, expires)
    return f"{env.public_url.rstrip('/')}/media/{media_id}?expires={expires}&sig={sig}"


def verify_media_signature(secret_key: str, media_id: int | str, expires: str, sig: str,
                           now: float) -> bool:
    """Whether ``expires``/``sig`` (as received in the query) sign ``media_id`` (an inline
    media id, or an ``inbound_media_subject``) and have not expired at ``now``. Malformed
    values are simply invalid."""
    # isdigit alone accepts non-ASCII digits ("²"); the signer only ever writes 0-9, and
    # a few thousand digits would make int() raise.
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 20) or not sig.isascii():
        return False
    if int(expires) <= now:
        return False
    expected = _media_signature(secret_key, media_id, expires)
    return hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii"))


# --- safe download ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FetchedMedia:
    data: bytes
    # The media type without parameters ("image/jpeg"), as providers' upload APIs want it.
    content_type: str


class MediaFetchError(Exception):
    """A media URL that could not be fetched; ``retryable`` says whether trying later may help
    (DNS failure, timeout, 5xx) or not (forbidden address, 4xx, too large)."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def max_bytes_for(kind: str | None) -> int:
    """The size limit for media of ``kind`` ("image", ...; unknown or None: document)."""
    try:
        return MEDIA_MAX_BYTES[MediaKind(kind or "")]
    except ValueError:
        return MEDIA_MAX_BYTES[MediaKind.DOCUMENT]


async def _resolve(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    try:
        return await resolve_public(host, port, allow_private)
    except AddressRefused as exc:
        raise MediaFetchError(exc.reason, exc.retryable) from exc


def _check_url(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise MediaFetchError(f"media URL scheme {url.scheme!r} is not http(s)",
                              retryable=False)
    if not url.raw_host:
        raise MediaFetchError("media URL has no host", retryable=False)


def _status_error(response: httpx.Response, url: httpx.URL) -> MediaFetchError:
    code = response.status_code
    retryable = code >= 500 or code in _RETRYABLE_CLIENT_STATUSES
    return MediaFetchError(f"media URL {url} answered HTTP {code}", retryable=retryable)


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise MediaFetchError(f"media of {declared} bytes exceeds {max_bytes} bytes",
                              retryable=False)
    # Counted after content decoding: that is what we would forward, and it also caps a
    # compressed body that inflates far past its Content-Length.
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise MediaFetchError(f"media exceeds {max_bytes} bytes", retryable=False)
    return bytes(body)


async def _open(client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress],
                timeout: float) -> httpx.Response:
    try:
        return await send_pinned(client, "GET", url, addresses, timeout, stream=True)
    except AddressRefused as exc:
        raise MediaFetchError(exc.reason, exc.retryable) from exc
    except httpx.ConnectError as exc:
        raise MediaFetchError(f"cannot connect to {url.host}: {exc}", retryable=True) from exc


async def _fetch(client: httpx.AsyncClient, url: httpx.URL, max_bytes: int, timeout: float,
                 allow_private: bool) -> FetchedMedia:
    for _hop in range(MAX_REDIRECTS + 1):
        _check_url(url)
        addresses = await _resolve(url.raw_host.decode("ascii"), default_port(url),
                                   allow_private)
        response = await _open(client, url, addresses, timeout)
        try:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise MediaFetchError(f"redirect from {url} without Location",
                                          retryable=False)
                try:
                    url = url.join(location)
                except httpx.InvalidURL as exc:
                    raise MediaFetchError(f"bad redirect Location {location!r}",
                                          retryable=False) from exc
                continue
            if not 200 <= response.status_code < 300:
                raise _status_error(response, url)
            data = await _read_capped(response, max_bytes)
            content_type = response.headers.get("content-type", "")
            media_type = content_type.split(";", 1)[0].strip().lower()
            return FetchedMedia(data, media_type or _DEFAULT_CONTENT_TYPE)
        finally:
            await response.aclose()
    raise MediaFetchError(f"more than {MAX_REDIRECTS} redirects", retryable=False)


async def fetch_media(url: str, *, max_bytes: int, timeout: float, allow_private: bool,
                      client: httpx.AsyncClient | None = None) -> FetchedMedia:
    """Download ``url`` (at most ``max_bytes``, within ``timeout`` seconds in all, redirects
    included), refusing non-public addresses unless ``allow_private``. Raises
    ``MediaFetchError``; pass a long-lived ``client`` to reuse its connections."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise MediaFetchError(f"invalid media URL: {exc}", retryable=False) from exc
    own_client = client is None
    if client is None:
        # trust_env off: the address checks vouch for where this host connects; a proxy from
        # the environment would connect from somewhere else, with other neighbours.
        client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(client, parsed, max_bytes, timeout, allow_private)
    except TimeoutError as exc:
        raise MediaFetchError(f"media download exceeded {timeout} s", retryable=True) from exc
    except httpx.TimeoutException as exc:
        raise MediaFetchError(f"media download timed out: {exc}", retryable=True) from exc
    except httpx.DecodingError as exc:
        raise MediaFetchError(f"media body cannot be decoded: {exc}", retryable=False) from exc
    except httpx.RequestError as exc:   # connection reset, protocol error: the server's mood
        raise MediaFetchError(f"media download failed: {exc}", retryable=True) from exc
    finally:
        if own_client:
            await client.aclose()
