"""Outbound connections to URLs that callers and operators give: resolve, vet, connect to the
vetted address.

``pushgate.core.addresses`` says, without I/O, which host a URL names and which addresses are
public. This module does the I/O around it (both the connectors and the webhook deliverer use
it; it imports only core and httpx):

- ``resolve_public``: a host's addresses through the event loop's ``getaddrinfo`` (never
  blocking the loop), refused when *any* of them is not public, since a host answering with a
  public and a private address can steer a client to either;
- ``send_pinned``: a request sent to one of those vetted addresses, not to the name, so a second
  DNS answer cannot swap a private address in between the check and the connection (DNS
  rebinding); the name stays in ``Host`` and TLS SNI, so virtual hosting and certificate checks
  are exactly as for the name;
- ``NameVerdicts``: the accept path's short-lived cache of "does this media host resolve to
  public addresses only", one lookup per distinct name per push, concurrent pushes sharing one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator, Mapping

import httpx

from pushgate.core.addresses import (
    IPAddress,
    UrlHost,
    is_forbidden_address,
    literal_problem,
    url_host,
)

#: How long a media host's verdict is kept on the accept path. Short: DNS answers change.
VERDICT_TTL_SECONDS = 30.0
#: A name that did not resolve is asked again sooner (the failure may be passing).
FAILURE_TTL_SECONDS = 5.0
#: How long the accept path waits for one name (a resolver's retries can take much longer).
LOOKUP_TIMEOUT_SECONDS = 5.0
MAX_CACHED_NAMES = 4096
#: Lookups in flight at once (each holds a thread of the loop's default executor).
MAX_CONCURRENT_LOOKUPS = 16


class AddressRefused(Exception):
    """A host that must not (``retryable`` False: a non-public address) or cannot yet
    (``retryable`` True: DNS failed) be connected to."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


async def resolve_public(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """The addresses to try for ``host`` (a name or an IP literal), each vetted unless
    ``allow_private``. Raises ``AddressRefused``."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise AddressRefused(f"cannot resolve {host!r}: {exc}", retryable=True) from exc
        addresses = []
        for _family, _type, _proto, _canonname, sockaddr in infos:
            # A scoped IPv6 answer (fe80::1%eth0) comes back with its zone in sockaddr[3].
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise AddressRefused(f"{host!r} has no address", retryable=True)
    if not allow_private:
        for address in addresses:
            if is_forbidden_address(address):
                raise AddressRefused(f"{host!r} resolves to non-public address {address}",
                                     retryable=False)
    return addresses


async def vet_url(url: str, allow_private: bool) -> UrlHost:
    """Check a URL someone asks pushgate to call (a webhook): http(s), a host every client
    reads alike, and (unless ``allow_private``) public addresses only, resolving a name.
    Raises ``UrlError`` (always refused) or ``AddressRefused`` (``retryable``: the name does
    not resolve now)."""
    host = url_host(url)
    if allow_private:
        return host
    problem = literal_problem(host)
    if problem is not None:
        raise AddressRefused(problem, retryable=False)
    if host.name is not None:
        await resolve_public(host.name, host.port, allow_private=False)
    return host


def pinned_request(client: httpx.AsyncClient, method: str, url: httpx.URL, address: IPAddress,
                   timeout: float, headers: dict[str, str] | None = None,
                   content: bytes | None = None) -> httpx.Request:
    """A request for ``url`` sent to ``address``.

    Why the URL is rewritten to the IP rather than resolved again by httpx: any second lookup
    may get a different (private) answer than the one we vetted. The URL's host becomes the
    vetted address; the ``Host`` header keeps the name so virtual hosting works, and for https
    httpcore's ``sni_hostname`` extension sends the name in SNI and checks the certificate
    against it, so TLS is exactly as strict as for the name. This works with any
    ``AsyncClient`` a caller passes in, unlike a custom transport. Its pool keys connections by
    address, so a kept-alive connection may carry a later request for another name on the same
    address; both names were vetted, so that cannot reach a forbidden host.
    Raises ``AddressRefused`` when the URL cannot carry the address.
    """
    host = url.raw_host.decode("ascii")
    is_ipv6_literal = ":" in host
    netloc_host = f"[{host}]" if is_ipv6_literal else host
    host_header = netloc_host if url.port is None else f"{netloc_host}:{url.port}"
    extensions: dict[str, object] = {}
    if url.scheme == "https" and str(address) != host:
        # SNI carries names only; for an IP-literal URL httpcore checks the IP as it is.
        extensions["sni_hostname"] = host
    try:
        target = url.copy_with(host=str(address))
    except httpx.InvalidURL as exc:
        raise AddressRefused(f"cannot address {address}: {exc}", retryable=False) from exc
    request = client.build_request(method, target, headers={**(headers or {}),
                                                            "Host": host_header},
                                   content=content, timeout=timeout)
    request.extensions.update(extensions)
    return request


def default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def send_pinned(client: httpx.AsyncClient, method: str, url: httpx.URL,
                      addresses: list[IPAddress], timeout: float, *, stream: bool = False,
                      headers: dict[str, str] | None = None,
                      content: bytes | None = None) -> httpx.Response:
    """Send the request to the first vetted address that accepts a connection (a host's IPv6
    address is often unreachable while its IPv4 one works). Redirects are never followed: a
    caller that follows them checks each hop. Raises ``httpx.ConnectError`` when no address
    accepts, other ``httpx`` errors as they come."""
    last_error: httpx.ConnectError | None = None
    for address in addresses:
        request = pinned_request(client, method, url, address, timeout, headers, content)
        try:
            return await client.send(request, stream=stream, follow_redirects=False)
        except httpx.ConnectError as exc:
            last_error = exc
    assert last_error is not None   # addresses is never empty
    raise last_error


class NameVerdicts:
    """For the accept path: whether media host names resolve to public addresses only,
    remembered for ``ttl`` seconds. A verdict is None (public) or the reason it is refused."""

    def __init__(self, ttl: float = VERDICT_TTL_SECONDS,
                 failure_ttl: float = FAILURE_TTL_SECONDS,
                 lookup_timeout: float = LOOKUP_TIMEOUT_SECONDS,
                 max_names: int = MAX_CACHED_NAMES) -> None:
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.lookup_timeout = lookup_timeout
        self.max_names = max_names
        self._verdicts: dict[str, tuple[float, str | None]] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    def known(self) -> Mapping[str, str | None]:
        """The verdicts that have not expired, as a live view: nothing is copied per push."""
        return _FreshVerdicts(self._verdicts)

    async def judge(self, names: Iterable[str]) -> dict[str, str | None]:
        """A fresh-enough verdict for each name, looking up (concurrently) those not known."""
        now = time.monotonic()
        wanted = set(names)
        verdicts: dict[str, str | None] = {}
        waits: dict[str, asyncio.Future[str | None]] = {}
        for name in wanted:
            cached = self._verdicts.get(name)
            if cached is not None and cached[0] > now:
                verdicts[name] = cached[1]
                continue
            pending = self._pending.get(name)
            if pending is None:
                pending = self._pending[name] = asyncio.ensure_future(self._lookup(name))
            waits[name] = pending
        for name, future in waits.items():
            verdicts[name] = await asyncio.shield(future)
        return verdicts

    async def _lookup(self, name: str) -> str | None:
        verdict: str | None
        ttl = self.ttl
        try:
            async with self._slots, asyncio.timeout(self.lookup_timeout):
                await resolve_public(name, 443, allow_private=False)
            verdict = None
        except AddressRefused as exc:
            verdict = exc.reason
            if exc.retryable:
                ttl = self.failure_ttl
        except TimeoutError:
            verdict = f"{name!r} did not resolve within {self.lookup_timeout:g} s"
            ttl = self.failure_ttl
        finally:
            self._pending.pop(name, None)
        while len(self._verdicts) >= self.max_names:
            self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[name] = (time.monotonic() + ttl, verdict)
        return verdict


class _FreshVerdicts(Mapping[str, "str | None"]):
    """A read-only view of ``NameVerdicts``' cache that hides expired verdicts."""

    __slots__ = ("_verdicts",)

    def __init__(self, verdicts: dict[str, tuple[float, str | None]]) -> None:
        self._verdicts = verdicts

    def __getitem__(self, name: str) -> str | None:
        until, verdict = self._verdicts[name]
        if until <= time.monotonic():
            raise KeyError(name)
        return verdict

    def __iter__(self) -> Iterator[str]:
        now = time.monotonic()
        return iter([name for name, (until, _) in self._verdicts.items() if until > now])

    def __len__(self) -> int:
        return sum(1 for _ in self)
