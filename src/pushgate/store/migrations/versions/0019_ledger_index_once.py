"""The credit ledger indexed by project once: ``ix_credit_ledger_project_id`` (0001's
``index=True`` on ``project_id``) is a prefix of ``credit_ledger_project`` (project_id, id,
0017), which serves every query the first one could. Each debit and refund wrote both.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_credit_ledger_project_id", "credit_ledger")


def downgrade() -> None:
    op.create_index("ix_credit_ledger_project_id", "credit_ledger", ["project_id"])
