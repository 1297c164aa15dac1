"""Inline media as a column: `messages.media_id` names the push's stored copy (`media.id`)
that a message sends, instead of a `media:<id>` text in `messages.media`.

Existing rows are converted: a `media:<id>` value moves into the column and `media` is left
NULL (it holds URLs only). Like `pushes.media_id`, the column carries no foreign-key
constraint: the schema declares none, and checking one would be paid by every message the
accept path inserts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("media_id", sa.BigInteger))
    # The same SQL in both dialects: substr counts from 1, the id follows the 6 characters
    # of the marker.
    op.execute("UPDATE messages SET media_id = CAST(substr(media, 7) AS BIGINT), media = NULL"
               " WHERE media LIKE 'media:%'")


def downgrade() -> None:
    op.execute("UPDATE messages SET media = 'media:' || CAST(media_id AS TEXT)"
               " WHERE media_id IS NOT NULL")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("media_id")
