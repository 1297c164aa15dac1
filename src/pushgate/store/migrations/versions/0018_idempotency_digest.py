"""Idempotency keys remember what they were used for: ``idempotency_keys.digest``, the
digest of the push's planned messages (``core.push.plan_digest``: numbers, texts, media,
send_at), so a key reused for another push of the same size is refused rather than
answered with the first push. NULL for the keys recorded before: those replay unchecked.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("digest", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("digest")
