"""A message's routine steps as columns: its first claim, its submission, its delivery on send.

Nearly every message is claimed once, submitted once and (on a channel whose send answer says
so) delivered with it. Keeping those steps as columns of the row the dispatcher updates anyway,
instead of as three more `message_events` rows, is what the dispatch path's cost per message is
made of (docs/benchmarks.md). The exceptions — re-claims, retries, releases, failures, refunds,
status updates — stay event rows; `core/history.py` puts the two together again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    # How often the dispatcher claimed the message: the first claim (0 → 1) is kept in the
    # two columns after it, every later one is an event row.
    op.add_column("messages", sa.Column("claims", sa.Integer, nullable=False,
                                        server_default="0"))
    op.add_column("messages", sa.Column("first_claim_at", TIME))
    op.add_column("messages", sa.Column("first_claim_by", sa.Text))
    # When the dispatcher recorded the submission, and a delivery the send itself reported. A
    # submission with a problem to report also keeps its event rows (core/history.py).
    op.add_column("messages", sa.Column("submitted_at", TIME))
    op.add_column("messages", sa.Column("delivered_at", TIME))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for column in ("delivered_at", "submitted_at", "first_claim_by", "first_claim_at",
                       "claims"):
            batch.drop_column(column)
