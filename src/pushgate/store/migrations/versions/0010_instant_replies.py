"""Instant replies' loop guard: when each number last got an instant reply on each channel.

A table of its own rather than a question to `messages`: `messages` has no index by number
(the accept path pays for every index), and a marker column plus such an index would cost
every push to guard a rare event. This table holds one row per (channel, number) ever
answered, read and written by one primary-key upsert in the transaction that accepts the
reply, so two processes answering the same user cannot both pass.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "instant_replies",
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("replied_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "number", name="instant_replies_pkey"),
    )


def downgrade() -> None:
    op.drop_table("instant_replies")
