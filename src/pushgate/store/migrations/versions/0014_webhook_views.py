"""Indexes for the dashboard's webhooks page: a project's outbox rows newest first
(``outbox_project``), and its users' messages still waiting for the incoming webhook
(``inbound_waiting``, partial: only rows with a ``forward_at``, so delivered messages cost it
nothing; SQLite's queries repeat ``forward_at IS NOT NULL`` to use it).

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

WAITING = "forward_at IS NOT NULL"


def upgrade() -> None:
    op.create_index("outbox_project", "outbox", ["project_id", "id"])
    op.create_index("inbound_waiting", "inbound_messages", ["project_id", "id"],
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))


def downgrade() -> None:
    op.drop_index("inbound_waiting", "inbound_messages")
    op.drop_index("outbox_project", "outbox")
