"""Connector traffic: provider ids of multi-part sends, early status updates, inbound messages,
per-message channel data (WhatsApp templates), channel pause reasons, the project's incoming
webhook.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    # Every provider id of a message sent as several sends (SMS parts, media then its text),
    # with aliases (hex and decimal SMSC ids) sharing a part; state per part.
    op.create_table(
        "provider_refs",
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("part", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "provider_id"),
    )
    op.create_index("provider_refs_message", "provider_refs", ["message_id", "part"])
    # Status updates naming a provider id not stored yet (a receipt that overtook its
    # submit_sm_resp): applied when the id is recorded, purged after a day.
    op.create_table(
        "early_updates",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("received_at", TIME, nullable=False),
    )
    op.create_index("early_updates_ref", "early_updates", ["channel_id", "provider_id"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("provider_id", sa.Text, nullable=False),
        sa.Column("media_url", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("raw", sa.Text, nullable=False, server_default="{}"),
        sa.Column("at", TIME, nullable=False),
        # Forwarding to the project's incoming webhook (the row is its own outbox item).
        sa.Column("forward_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("forward_at", TIME),
        sa.UniqueConstraint("channel_id", "provider_id", name="inbound_once"),
    )
    op.create_index("inbound_forward", "inbound_messages", ["forward_at"])
    op.create_index("inbound_window", "inbound_messages", ["channel_id", "number", "at"])
    op.add_column("messages", sa.Column("extra", sa.Text))
    op.add_column("channels", sa.Column("paused_reason", sa.Text))
    op.add_column("projects", sa.Column("incoming_webhook_url", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("incoming_webhook_url")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("paused_reason")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("extra")
    for table in ("inbound_messages", "early_updates", "provider_refs"):
        op.drop_table(table)
