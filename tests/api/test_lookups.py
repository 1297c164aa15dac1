"""The API's token and channel lookups: kept for a short time, never for unknown ones."""

from __future__ import annotations

from typing import Any

import pytest

from pushgate.api import auth
from pushgate.api.auth import Lookups
from pushgate.core.tokens import hash_token, new_token


class CountingStore:
    """The real store, counting the lookups that reach it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls = 0

    async def authenticate(self, token_hash: str) -> Any:
        self.calls += 1
        return await self.store.authenticate(token_hash)

    async def find_channel(self, project_id: int, application: int) -> Any:
        self.calls += 1
        return await self.store.find_channel(project_id, application)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    return now


async def test_a_token_is_read_once_per_ttl_and_a_revocation_shows_after_it(
        store, make, clock) -> None:
    project, token, _ = await make.project()
    counting = CountingStore(store)
    lookups = Lookups(counting, ttl=1.0)  # type: ignore[arg-type]
    token_hash = hash_token(token)

    first = await lookups.authenticate(token_hash)
    assert first is not None and not first.revoked
    assert await lookups.authenticate(token_hash) == first
    assert counting.calls == 1

    assert await store.revoke_token(first.token_id)
    clock[0] += 0.5
    assert not (await lookups.authenticate(token_hash)).revoked   # still within the ttl
    clock[0] += 0.6
    assert (await lookups.authenticate(token_hash)).revoked
    assert counting.calls == 2


async def test_unknown_tokens_and_channels_are_not_kept(store, make, clock) -> None:
    project, _token, _ = await make.project()
    counting = CountingStore(store)
    lookups = Lookups(counting, ttl=60.0)  # type: ignore[arg-type]
    fresh = new_token()
    assert await lookups.authenticate(hash_token(fresh)) is None
    assert await lookups.find_channel(project.id, 1) is None

    # Created a moment later, both work at once.
    await store.create_token(project.id, hash_token(fresh), "new", [])
    channel = await make.channel(project.id, application=1)
    assert (await lookups.authenticate(hash_token(fresh))).project_id == project.id
    assert (await lookups.find_channel(project.id, 1)).id == channel.id
    assert counting.calls == 4


async def test_forget_and_a_zero_ttl_read_the_store_again(store, make, clock) -> None:
    project, token, _ = await make.project()
    channel = await make.channel(project.id, application=1)
    counting = CountingStore(store)
    lookups = Lookups(counting, ttl=60.0)  # type: ignore[arg-type]
    assert not (await lookups.find_channel(project.id, 1)).paused
    await store.update_channel(channel.id, paused=True, paused_reason="")
    assert not (await lookups.find_channel(project.id, 1)).paused   # kept
    lookups.forget()
    assert (await lookups.find_channel(project.id, 1)).paused

    uncached = Lookups(counting, ttl=0.0)  # type: ignore[arg-type]
    calls = counting.calls
    for _ in range(3):
        assert await uncached.authenticate(hash_token(token)) is not None
    assert counting.calls == calls + 3
