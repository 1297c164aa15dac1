"""Android phones (SMS Gateway for Android) that fetch their channel's messages: the paired
devices, which messages each was handed (for its send limits and its state reports), and which
device last wrote to each recipient (so a recipient keeps hearing from the same phone).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "devices",
        # The id the app knows its device by (21 URL-safe characters, as the original server).
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("channel_id", sa.Integer, nullable=False, index=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        # SHA-256 of the device's bearer token; the token itself is shown to the app once.
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("push_token", sa.Text),
        sa.Column("user_agent", sa.Text, nullable=False, server_default=""),
        # What the device reported about itself (SIM cards, battery, network) as JSON.
        sa.Column("health", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_seen_at", TIME),
        sa.Column("revoked_at", TIME),
        # No new messages before this time: the random delay between messages, or a full
        # per-minute/hour/day window.
        sa.Column("ready_at", TIME, nullable=False, server_default="0"),
        # Android refused to send more (RESULT_ERROR_LIMIT_EXCEEDED): no new messages until then.
        sa.Column("paused_until", TIME, nullable=False, server_default="0"),
        # An operator's `restart`: event streams opened before this time are closed.
        sa.Column("reconnect_at", TIME, nullable=False, server_default="0"),
    )
    op.create_table(
        "device_messages",
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("handed_at", TIME, nullable=False),
        # The last state the device reported for it (NULL: handed out, not acknowledged yet).
        sa.Column("reported_state", sa.Text),
        sa.Column("reported_at", TIME),
        sa.PrimaryKeyConstraint("message_id", "device_id"),
    )
    # Per-device send windows (last minute / hour / day) and the purge of old rows.
    op.create_index("device_messages_window", "device_messages", ["device_id", "handed_at"])
    op.create_table(
        "device_recipients",
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "number"),
    )


def downgrade() -> None:
    for table in ("device_recipients", "device_messages", "devices"):
        op.drop_table(table)
