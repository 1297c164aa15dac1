"""The dashboard's searches: a project's messages by number and by reference, and its credit
ledger page by page, each read through an index rather than a scan of the project's rows.

``messages_number`` serves ``find_messages(number=...)``; ``messages_reference`` holds only
the messages that carry a reference (most carry none). ``credit_ledger_project`` orders a
project's ledger by id (the single-column index on ``project_id`` makes PostgreSQL sort).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("messages_number", "messages", ["project_id", "number", "id"])
    op.create_index("messages_reference", "messages", ["project_id", "reference", "id"],
                    sqlite_where=sa.text("reference IS NOT NULL"),
                    postgresql_where=sa.text("reference IS NOT NULL"))
    op.create_index("credit_ledger_project", "credit_ledger", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("credit_ledger_project", "credit_ledger")
    op.drop_index("messages_reference", "messages")
    op.drop_index("messages_number", "messages")
