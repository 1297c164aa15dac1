"""Validity is swept push by push: `pushes.expiry_due` and its index replace `messages_expiry`.

Every message of a push gets the same `expires_at` (the push's accept time plus the validity),
so an index of the pushes that can still expire finds the same messages as an index of the
queued messages did, with one entry a push instead of one a message. That entry was a
measurable share of a message row's insert cost on SQLite (docs/benchmarks.md), and every
claim paid a b-tree delete to take the message out of it. The sweep (`expire_due`) reads a due
push's messages through `messages_push`, and clears `expiry_due` once none of them is live.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    # When the push's next live message expires; NULL once none can.
    op.add_column("pushes", sa.Column("expiry_due", TIME))
    op.execute(sa.text(
        "UPDATE pushes SET expiry_due = (SELECT min(m.expires_at) FROM messages m"
        " WHERE m.push_id = pushes.id AND m.state IN ('queued', 'sending'))"))
    op.create_index("pushes_expiry", "pushes", ["expiry_due"],
                    sqlite_where=sa.text("expiry_due IS NOT NULL"),
                    postgresql_where=sa.text("expiry_due IS NOT NULL"))
    op.drop_index("messages_expiry", "messages")


def downgrade() -> None:
    op.create_index("messages_expiry", "messages", ["expires_at"],
                    sqlite_where=sa.text("state = 'queued'"),
                    postgresql_where=sa.text("state = 'queued'"))
    op.drop_index("pushes_expiry", "pushes")
    with op.batch_alter_table("pushes") as batch:
        batch.drop_column("expiry_due")
