"""Indexes on `messages` that hold only the rows they are for.

Every state change of a message used to rewrite its entries in the claim and expiry indexes,
and a finished message stayed in both for good; its empty provider id sat in the provider
index from the start. Each index now keeps only the rows its queries look for: the claim index
live messages (queued, sending), the expiry index queued ones, the provider index those with
an id. A message leaving a partial index costs one b-tree delete and no insert (SQLite), and
its new row version gets no entry there (PostgreSQL). Two small indexes take over the queries
that read finished messages through the claim index: `sent_since` (channel caps) counts by
`submitted_at`, `submitted_before` (simulated deliveries) reads the `submitted` ones.

SQLite uses a partial index only when the query repeats its WHERE terms, so the store's
queries spell out `state IN ('queued', 'sending')` (`store/sqlite/common.py`, `_LIVE`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LIVE = "state IN ('queued', 'sending')"


def _partial(name: str, columns: list[str | sa.TextClause], where: str) -> None:
    op.create_index(name, "messages", columns, sqlite_where=sa.text(where),
                    postgresql_where=sa.text(where))


def upgrade() -> None:
    for name in ("messages_claim", "messages_expiry", "messages_provider"):
        op.drop_index(name, "messages")
    _partial("messages_claim", ["channel_id", "state", sa.text("priority DESC"), "id"], LIVE)
    _partial("messages_expiry", ["expires_at"], "state = 'queued'")
    _partial("messages_provider", ["channel_id", "provider_id"], "provider_id IS NOT NULL")
    _partial("messages_submitted", ["channel_id", sa.text("priority DESC"), "id"],
             "state = 'submitted'")
    _partial("messages_sent", ["channel_id", "submitted_at"], "submitted_at IS NOT NULL")
    # Caps count a day back by `submitted_at`: give the last day's sends recorded before 0005
    # theirs, from their `submitted` event (the history shows such a row once, see
    # core/history.py).
    op.execute(sa.text(
        "UPDATE messages SET submitted_at = (SELECT min(e.at) FROM message_events e"
        " WHERE e.message_id = messages.id AND e.state = 'submitted')"
        " WHERE submitted_at IS NULL AND updated_at >= :since"
        " AND state IN ('submitted', 'delivered', 'read', 'failed')"
    ).bindparams(since=time.time() - 86_400))


def downgrade() -> None:
    for name in ("messages_sent", "messages_submitted", "messages_provider",
                 "messages_expiry", "messages_claim"):
        op.drop_index(name, "messages")
    op.create_index("messages_claim", "messages",
                    ["channel_id", "state", sa.text("priority DESC"), "id"])
    op.create_index("messages_provider", "messages", ["channel_id", "provider_id"])
    op.create_index("messages_expiry", "messages", ["state", "expires_at"])
