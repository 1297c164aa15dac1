"""Opt-outs: ``optouts`` lists the numbers a project must send nothing to (normalised: digits
only), keyed by project and number, which is also the accept path's lookup. ``optout_events``
records each STOP / START a user wrote and is its own outbox item for the event webhook
(Picky's event 4: ``forward_at``, ``forward_attempts``), like ``number_checks``. The project's
STOP and START keywords (NULL: the defaults) and the confirmations answered to them are
columns of ``projects``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
FORWARD = "forward_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "optouts",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("number", sa.Text, primary_key=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
    )
    op.create_table(
        "optout_events",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("keyword", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("forward_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("forward_at", TIME),
    )
    op.create_index("optout_events_forward", "optout_events", ["forward_at"],
                    sqlite_where=sa.text(FORWARD), postgresql_where=sa.text(FORWARD))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("stop_keywords", sa.Text))
        batch.add_column(sa.Column("start_keywords", sa.Text))
        batch.add_column(sa.Column("stop_reply", sa.Text))
        batch.add_column(sa.Column("start_reply", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        for column in ("start_reply", "stop_reply", "start_keywords", "stop_keywords"):
            batch.drop_column(column)
    op.drop_index("optout_events_forward", "optout_events")
    op.drop_table("optout_events")
    op.drop_table("optouts")
