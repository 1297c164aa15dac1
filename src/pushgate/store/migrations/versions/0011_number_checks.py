"""Picky's WhatsApp number filter (a push with ``action: 1``): ``number_checks`` holds each
number to check. The row is the dispatcher's queue (``check_at``: due from then; a claim moves
it past the lease; NULL once answered), the answer, and its own outbox item for the event
webhook (``forward_at``, ``forward_attempts``), like ``inbound_messages`` for the incoming one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "number_checks",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("push_id", sa.BigInteger, nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("check_at", TIME),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("on_whatsapp", sa.Boolean),
        sa.Column("checked_by", sa.Text),
        sa.Column("chat_id", sa.Text),
        sa.Column("checked_at", TIME),
        sa.Column("forward_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("forward_at", TIME),
    )
    op.create_index("number_checks_due", "number_checks", ["channel_id", "check_at"])
    op.create_index("number_checks_forward", "number_checks", ["forward_at"])
    op.create_index("number_checks_push", "number_checks", ["push_id", "id"])


def downgrade() -> None:
    op.drop_table("number_checks")
