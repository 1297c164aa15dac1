"""PostgreSQL drops the dashboard search's indexes by number and by reference too (SQLite did
in 0020): maintaining their random-order entries cost 1,000-recipient accepts ~40 % of their
rate there (docs/benchmarks.md). ``find_messages`` reads a window of ids through the primary
key on both stores.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgresql():
        op.drop_index("messages_reference", "messages")
        op.drop_index("messages_number", "messages")


def downgrade() -> None:
    if _postgresql():
        op.create_index("messages_number", "messages", ["project_id", "number", "id"])
        op.create_index("messages_reference", "messages", ["project_id", "reference", "id"],
                        postgresql_where=sa.text("reference IS NOT NULL"))
