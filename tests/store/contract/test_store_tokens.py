"""A project's tokens as `pushgate token list` reads them: typed records, never the token."""

from __future__ import annotations

from typing import Any

from pushgate.core.models import TokenRecord
from pushgate.core.tokens import hash_token, new_token
from pushgate.store.base import Store


async def test_tokens_list_in_creation_order_with_allow_lists_and_revocation(
        store: Store, make: Any) -> None:
    project, _token, _secret = await make.project()
    other, _t, _s = await make.project()
    second = await store.create_token(project.id, hash_token(new_token()), "office",
                                      ["10.0.0.1", "192.168.1.0/24"])
    await store.create_token(other.id, hash_token(new_token()), "elsewhere", [])
    assert await store.revoke_token(second)

    tokens = await store.list_tokens(project.id)

    assert all(isinstance(t, TokenRecord) for t in tokens)
    assert [(t.label, t.ip_allow, t.revoked_at is not None) for t in tokens] == [
        ("test", [], False), ("office", ["10.0.0.1", "192.168.1.0/24"], True)]
    assert tokens[1].id == second and tokens[0].id < second
    assert tokens[1].revoked_at is not None and tokens[1].revoked_at >= tokens[1].created_at
