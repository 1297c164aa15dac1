"""SQLite drops the dashboard search's indexes by number and by reference (0017). Their keys
arrive in random order, so each commit rewrote a page of each index for nearly every message
it added: 10,000-recipient pushes fell from ~136,000 to ~36,000 messages/s
(docs/benchmarks.md). SQLite's ``find_messages`` reads a window of ids through the primary
key instead. PostgreSQL keeps both indexes.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        op.drop_index("messages_reference", "messages")
        op.drop_index("messages_number", "messages")


def downgrade() -> None:
    if _sqlite():
        op.create_index("messages_number", "messages", ["project_id", "number", "id"])
        op.create_index("messages_reference", "messages", ["project_id", "reference", "id"],
                        sqlite_where=sa.text("reference IS NOT NULL"))
