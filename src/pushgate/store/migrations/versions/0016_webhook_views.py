"""For the dashboard's webhooks page: why a report's last try failed (``outbox.last_error``,
``inbound_messages.forward_error``), and indexes on a project's outbox rows newest first
(``outbox_project``) and on its users' messages still waiting for the incoming webhook
(``inbound_waiting``, partial: only rows with a ``forward_at``, so delivered messages cost it
nothing; SQLite's queries repeat ``forward_at IS NOT NULL`` to use it).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

WAITING = "forward_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("outbox", sa.Column("last_error", sa.Text))
    op.add_column("inbound_messages", sa.Column("forward_error", sa.Text))
    op.create_index("outbox_project", "outbox", ["project_id", "id"])
    op.create_index("inbound_waiting", "inbound_messages", ["project_id", "id"],
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))


def downgrade() -> None:
    op.drop_index("inbound_waiting", "inbound_messages")
    op.drop_index("outbox_project", "outbox")
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("forward_error")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("last_error")
