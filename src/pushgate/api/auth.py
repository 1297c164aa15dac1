"""Who is calling: token lookup, IP allow-lists, per-token push rate limits, and the throttle
on guessing tokens (per client address)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from functools import lru_cache
from typing import Protocol

from starlette.requests import Request

from pushgate.core.channels import APPLICATION_CODES, ChannelSpec
from pushgate.core.errors import ApiError, Code
from pushgate.core.models import TokenInfo
from pushgate.core.push import parse_int_field
from pushgate.core.tokens import hash_token
from pushgate.store.base import Store


def token_from(request: Request, body_token: str | int | None) -> str | None:
    """The token from the body (Picky's way), else ``Authorization: Bearer``, else ``?token=``.
    A token of digits only may come as a JSON number, as every Picky value may."""
    token = token_given(body_token, request.headers.get("authorization", ""))
    if token is not None:
        return token
    return request.query_params.get("token") or None


def token_given(body_token: str | int | None, authorization: str) -> str | None:
    """``token_from``'s first two places: the body's token, else ``Authorization: Bearer``."""
    if isinstance(body_token, int):
        return str(body_token)
    if body_token:
        return body_token.strip()
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


@lru_cache(maxsize=4096)
def _networks(allow: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in allow)


def ip_allowed(client_ip: str | None, allow: list[str]) -> bool:
    if not allow:
        return True
    if client_ip is None:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in _networks(tuple(allow)))


class FailureThrottle:
    """Failed authentications per client address, in a sliding window: once an address has
    ``limit`` failures within ``window`` seconds it is refused, before any token is looked at,
    until the oldest of them leaves the window. Successes are not counted and other addresses
    are not affected, so honest clients never wait behind a guesser.

    In memory and per process (each API process counts its own). IPv6 clients are counted per
    /64, the block one subscriber gets, so rotating addresses within it does not help. At most
    ``max_addresses`` addresses are remembered, the one that failed least recently forgotten
    first, each with at most ``limit`` times: a flood of addresses costs bounded memory.
    """

    def __init__(self, limit: int, window: float, max_addresses: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @staticmethod
    def source(client_ip: str | None) -> str:
        """The key an address is counted under."""
        if not client_ip:
            return "?"
        if ":" in client_ip:
            try:
                address = ipaddress.IPv6Address(client_ip)
            except ValueError:
                return client_ip
            mapped = address.ipv4_mapped
            if mapped is not None:
                return str(mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return client_ip

    def retry_after(self, client_ip: str | None, now: float | None = None) -> float | None:
        """Seconds until ``client_ip`` may try again, or None when it may now."""
        if self.limit <= 0:
            return None
        times = self._failures.get(self.source(client_ip))
        if times is None or len(times) < self.limit:
            return None
        now = time.monotonic() if now is None else now
        wait = times[0] + self.window - now
        return wait if wait > 0 else None

    def check(self, client_ip: str | None, now: float | None = None) -> None:
        """Raise ``ApiError`` 429 (with ``Retry-After``) when ``client_ip`` must wait."""
        wait = self.retry_after(client_ip, now)
        if wait is not None:
            raise ApiError(Code.RATE_LIMITED, "too many wrong tokens from this address",
                           retry_after=max(1, math.ceil(wait)))

    def failed(self, client_ip: str | None, now: float | None = None) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic() if now is None else now
        key = self.source(client_ip)
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)


class TokenSource(Protocol):
    async def authenticate(self, token_hash: str) -> TokenInfo | None: ...


class Lookups:
    """The store's token and channel lookups, each answer kept for ``ttl`` seconds.

    Every push needs both. On SQLite each is a read on the event-loop thread that must win the
    GIL back from the writer thread after the query: together they were a large share of the
    loop's time for single-recipient pushes (docs/benchmarks.md). The price is that a
    token revoked, a project deactivated or a channel changed by another process (the CLI,
    another node) reaches the API within ``ttl`` seconds; this process's own changes call
    :meth:`forget`. Unknown tokens and channels are not kept, so new ones work at once.
    ``ttl`` 0 reads the store every time.
    """

    def __init__(self, store: Store, ttl: float, failures: FailureThrottle | None = None) -> None:
        self.store = store
        self.ttl = ttl
        # Wrong tokens per client address (``authenticate`` counts and checks them).
        self.failures = failures
        self._tokens: dict[str, tuple[float, TokenInfo]] = {}
        self._channels: dict[tuple[int, int], tuple[float, ChannelSpec]] = {}
        self._channels_by_id: dict[tuple[int, int], tuple[float, ChannelSpec]] = {}

    async def authenticate(self, token_hash: str) -> TokenInfo | None:
        now = time.monotonic()
        kept = self._tokens.get(token_hash)
        if kept is not None and kept[0] > now:
            return kept[1]
        info = await self.store.authenticate(token_hash)
        if info is not None and self.ttl > 0:
            self._remember(self._tokens, token_hash, (now + self.ttl, info))
        return info

    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        now = time.monotonic()
        key = (project_id, application)
        kept = self._channels.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        channel = await self.store.find_channel(project_id, application)
        if channel is not None and self.ttl > 0:
            self._remember(self._channels, key, (now + self.ttl, channel))
        return channel

    async def project_channel(self, project_id: int, channel_id: int) -> ChannelSpec | None:
        """The channel with this id, if it is the project's."""
        now = time.monotonic()
        key = (project_id, channel_id)
        kept = self._channels_by_id.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        channel = await self.store.get_channel(channel_id)
        if channel is None or channel.project_id != project_id:
            return None
        if self.ttl > 0:
            self._remember(self._channels_by_id, key, (now + self.ttl, channel))
        return channel

    def forget(self) -> None:
        self._tokens.clear()
        self._channels.clear()
        self._channels_by_id.clear()

    @staticmethod
    def _remember(kept: dict, key: object, value: tuple[float, object]) -> None:  # type: ignore[type-arg]
        # Bounded: a flood of distinct valid tokens cannot grow it without limit.
        if len(kept) >= LOOKUPS_KEPT:
            kept.clear()
        kept[key] = value


LOOKUPS_KEPT = 10_000
#: Application codes and channel ids are 32-bit columns.
MAX_CHANNEL_FIELD = 2**31 - 1


def _given(value: str | int | None) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


async def resolve_channel(lookups: Lookups, project_id: int, application: str | int | None,
                          channel_id: str | int | None) -> ChannelSpec:
    """The channel a request names. ``channel_id`` (pushgate's own field) picks one channel of
    the project by id; ``application`` alone (Picky's field) picks the project's channel for
    that application code: of several, the unpaused one with the lowest id. The two are never
    confused: a code no channel serves is refused (407), even if a channel has that id."""
    if _given(channel_id):
        wanted = parse_int_field("channel_id", channel_id, maximum=MAX_CHANNEL_FIELD)
        channel = await lookups.project_channel(project_id, wanted)
        if channel is None:
            raise ApiError(Code.UNKNOWN_CHANNEL, f"the project has no channel {wanted}")
        if _given(application):
            code = parse_int_field("application", application, maximum=MAX_CHANNEL_FIELD)
            if code != channel.application:
                raise ApiError(Code.CHANNEL_APPLICATION_MISMATCH,
                               f"channel {channel.id} serves application {channel.application}"
                               f", not {code}")
        return channel
    code = parse_int_field("application", application, maximum=MAX_CHANNEL_FIELD)
    channel = await lookups.find_channel(project_id, code)
    if channel is None:
        name = APPLICATION_CODES.get(code)
        hint = f" ({name})" if name else ""
        raise ApiError(Code.UNKNOWN_APPLICATION,
                       f"the project has no channel for application {code}{hint}")
    return channel


async def authenticate(store: TokenSource, request: Request, token: str | None) -> TokenInfo:
    return await authenticate_from(store, request.client.host if request.client else None,
                                   token)


async def authenticate_from(store: TokenSource, client_ip: str | None,
                            token: str | None) -> TokenInfo:
    """``authenticate`` given the client's address rather than its request (the push fast
    path, ``api/fastpush.py``, has no ``Request``)."""
    # An address that sent too many unknown tokens waits, whatever it sends now.
    failures = store.failures if isinstance(store, Lookups) else None
    if failures is not None:
        failures.check(client_ip)
    if not token:
        raise ApiError(Code.AUTH_FAILED, "no token given")
    info = await store.authenticate(hash_token(token))
    if info is None:
        if failures is not None:
            failures.failed(client_ip)
        raise ApiError(Code.AUTH_FAILED, "unknown token")
    if info.revoked:
        raise ApiError(Code.TOKEN_REVOKED)
    if not info.project_active:
        raise ApiError(Code.API_NOT_ACTIVE)
    if not ip_allowed(client_ip, info.ip_allow):
        raise ApiError(Code.IP_NOT_ALLOWED, f"{client_ip} is not on the token's allow-list")
    return info


class RateLimiter:
    """A token bucket per API token: ``per_minute`` pushes, refilled continuously.

    Per process: with several API nodes each node allows the rate (documented in
    docs/scale-out.md when that lands).
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.buckets: dict[int, tuple[float, float]] = {}

    def check(self, token_id: int) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, updated = self.buckets.get(token_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - updated) * rate)
        if tokens < 1.0:
            self.buckets[token_id] = (tokens, now)
            retry_after = (1.0 - tokens) / rate
            raise ApiError(Code.RATE_LIMITED,
                           f"at most {self.per_minute} pushes per minute per token",
                           retry_after=max(1, round(retry_after + 0.5)))
        self.buckets[token_id] = (tokens - 1.0, now)
