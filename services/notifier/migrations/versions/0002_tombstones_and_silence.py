"""Deletion tombstones and per-conversation "silence until read".

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS: a pre-release 0001 already created the tombstone table on some dev databases.
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS notifier.message_tombstones (
            message_id UUID NOT NULL,
            deleted_at TIMESTAMP WITH TIME ZONE NOT NULL,
            CONSTRAINT pk_message_tombstones PRIMARY KEY (message_id)
        )
        """
    )
    op.execute(
        "ALTER TABLE notifier.threads"
        " ADD COLUMN IF NOT EXISTS silence_until_read BOOLEAN NOT NULL DEFAULT false"
    )


def downgrade() -> None:
    op.drop_column("threads", "silence_until_read", schema="notifier")
    op.drop_table("message_tombstones", schema="notifier")
