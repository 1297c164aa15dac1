"""Initial schema: projects, tokens, channels, pushes, messages, events, outbox, leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Times are unix seconds as double precision on both databases: one representation, cheap to
# compare in claim queries, no timezone conversion. Money is integer micro-credits.
TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("balance_micro", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_secret", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint("balance_micro >= 0", name="balance_not_negative"),
    )
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("delta_micro", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("push_id", sa.BigInteger),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("ip_allow", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME),
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("application", sa.Integer, nullable=False),
        sa.Column("price_micro", sa.BigInteger, nullable=False),
        sa.Column("price_unit", sa.Text, nullable=False),
        sa.Column("max_chars", sa.Integer, nullable=False),
        sa.Column("max_segments", sa.Integer, nullable=False),
        sa.Column("media_allowed", sa.Boolean, nullable=False),
        sa.Column("rate_per_second", sa.Float, nullable=False, server_default="0"),
        sa.Column("delay_ms", sa.Integer, nullable=False, server_default="0"),
        sa.Column("jitter_ms", sa.Integer, nullable=False, server_default="0"),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("config", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "pushes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("credit_micro", sa.BigInteger, nullable=False),
        sa.Column("media_id", sa.BigInteger),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("pushes_project", "pushes", ["project_id", "id"])
    op.create_table(
        "media",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("push_id", sa.BigInteger, nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("media", sa.Text),
        sa.Column("media_kind", sa.Text),
        sa.Column("reference", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("parts", sa.SmallInteger, nullable=False),
        sa.Column("segments", sa.SmallInteger, nullable=False),
        sa.Column("credit_micro", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("resends", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("lease_until", TIME),
        sa.Column("leased_by", sa.Text),
        sa.Column("provider_id", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("expires_at", TIME),
    )
    # The claim: a channel's ready messages, high priority first, then oldest.
    op.create_index(
        "messages_claim", "messages",
        ["channel_id", "state", sa.text("priority DESC"), "id"],
    )
    op.create_index("messages_push", "messages", ["push_id", "id"])
    op.create_index("messages_provider", "messages", ["channel_id", "provider_id"])
    op.create_index("messages_expiry", "messages", ["state", "expires_at"])
    op.create_table(
        "message_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("message_events_message", "message_events", ["message_id", "id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("lease_until", TIME),
        sa.Column("dead", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("outbox_ready", "outbox", ["dead", "next_attempt_at", "id"])
    op.create_table(
        "channel_leases",
        # A reference to channels.id, not a generated key (no SERIAL on PostgreSQL).
        sa.Column("channel_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("worker_id", sa.Text, nullable=False),
        sa.Column("lease_until", TIME, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "channel_leases", "outbox", "message_events", "messages", "media", "pushes",
        "channels", "api_tokens", "credit_ledger", "projects",
    ):
        op.drop_table(table)
