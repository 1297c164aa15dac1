"""Idempotency keys: ``idempotency_keys`` ties a key a client chose (the ``Idempotency-Key``
header of ``POST /api/v2/push``) or pushgate derived (``pushgate send``, ``POST
/api/v2/push-csv``: a digest of the file, the options and the chunk) to the push it was
accepted as, unique per project, so a repeated accept answers with that push and charges
nothing. ``push_id`` is NULL only inside the accepting transaction (PostgreSQL claims the key
first, so a concurrent accept of the same key waits for it).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("push_id", sa.BigInteger),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "key", name="idempotency_keys_pkey"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
