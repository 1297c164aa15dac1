"""Scheduled pushes: ``pushes.send_at`` (when the push is to be sent, kept for its reports)
and ``pushes.schedule_due`` (the same time while some of its messages still wait, NULL once
none does), indexed where not null, so the dispatcher's promoter finds the due pushes with
one entry a push. Their messages wait in state ``scheduled``: outside the claim index
(``state IN ('queued', 'sending')``), so any number of future messages costs a claim
nothing. ``messages_scheduled`` (partial: scheduled messages only) is how a due push's
messages are promoted to ``queued`` batch by batch without passing over those already moved.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)
DUE = "schedule_due IS NOT NULL"
SCHEDULED = "state = 'scheduled'"


def upgrade() -> None:
    op.add_column("pushes", sa.Column("send_at", TIME))
    op.add_column("pushes", sa.Column("schedule_due", TIME))
    op.create_index("pushes_schedule", "pushes", ["schedule_due"],
                    sqlite_where=sa.text(DUE), postgresql_where=sa.text(DUE))
    op.create_index("messages_scheduled", "messages", ["push_id", "id"],
                    sqlite_where=sa.text(SCHEDULED), postgresql_where=sa.text(SCHEDULED))


def downgrade() -> None:
    # Messages still waiting are queued: without the columns nothing would ever promote them.
    op.execute(sa.text("UPDATE messages SET state = 'queued' WHERE state = 'scheduled'"))
    op.drop_index("messages_scheduled", "messages")
    op.drop_index("pushes_schedule", "pushes")
    with op.batch_alter_table("pushes") as batch:
        batch.drop_column("schedule_due")
        batch.drop_column("send_at")
