"""Parts of users' multi-part SMS (SMPP deliver_sm with a concatenation UDH or SAR TLVs), kept
until the message is whole or its wait is over, so parts arriving on another bind, or in a
process started after a crash, still join.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "inbound_parts",
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("reference", sa.Integer, nullable=False),
        sa.Column("total", sa.SmallInteger, nullable=False),
        sa.Column("seq", sa.SmallInteger, nullable=False),
        sa.Column("data_coding", sa.SmallInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("at", TIME, nullable=False),
        # One row per part: a part delivered again changes nothing.
        sa.PrimaryKeyConstraint("channel_id", "number", "destination", "reference", "total",
                                "seq", name="inbound_parts_pkey"),
    )
    # The sweep of messages whose parts stopped coming.
    op.create_index("inbound_parts_age", "inbound_parts", ["channel_id", "at"])


def downgrade() -> None:
    op.drop_table("inbound_parts")
