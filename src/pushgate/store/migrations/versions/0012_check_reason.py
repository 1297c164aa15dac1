"""Number checks that give up: ``number_checks.reason`` says why a check was answered without a
connector (``checked_by: "gave_up"``, after ``PUSHGATE_NUMBER_CHECK_TIMEOUT_SECONDS``), so the
event webhook and ``GET /api/v2/pushes/{id}`` can tell it; NULL for a check that was answered.
``number_checks_waiting`` (partial: unanswered checks only) is how the dispatcher's renewal
finds the checks past the timeout without reading every check ever made.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

WAITING = "check_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("number_checks", sa.Column("reason", sa.Text))
    op.create_index("number_checks_waiting", "number_checks", ["created_at", "id"],
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))


def downgrade() -> None:
    op.drop_index("number_checks_waiting", "number_checks")
    with op.batch_alter_table("number_checks") as batch:
        batch.drop_column("reason")
