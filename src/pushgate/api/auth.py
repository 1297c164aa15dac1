"""Who is calling: token lookup, IP allow-lists, per-token push rate limits."""

from __future__ import annotations

import ipaddress
import time
from functools import lru_cache

from starlette.requests import Request

from pushgate.core.errors import ApiError, Code
from pushgate.core.models import TokenInfo
from pushgate.core.tokens import hash_token
from pushgate.store.base import Store


def token_from(request: Request, body_token: str | None) -> str | None:
    """The token from the body (Picky's way), else ``Authorization: Bearer``, else ``?token=``."""
    if body_token:
        return body_token.strip()
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query_params.get("token") or None


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


async def authenticate(store: Store, request: Request, token: str | None) -> TokenInfo:
    if not token:
        raise ApiError(Code.AUTH_FAILED, "no token given")
    info = await store.authenticate(hash_token(token))
    if info is None:
        raise ApiError(Code.AUTH_FAILED, "unknown token")
    if info.revoked:
        raise ApiError(Code.TOKEN_REVOKED)
    if not info.project_active:
        raise ApiError(Code.API_NOT_ACTIVE)
    client_ip = request.client.host if request.client else None
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
