"""Channel fallback, a cooldown that a failed digest gives back, and indexes for retention.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("fallback_of", sa.UUID(), nullable=True), schema="notifier")
    op.add_column(
        "notifications",
        sa.Column("prior_notified_at", sa.DateTime(timezone=True), nullable=True),
        schema="notifier",
    )
    op.add_column(
        "notifications", sa.Column("prior_notified_seq", sa.BigInteger(), nullable=True), schema="notifier"
    )
    op.add_column(
        "notifications", sa.Column("prior_cooldown_level", sa.Integer(), nullable=True), schema="notifier"
    )
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], unique=False, schema="notifier")
    op.create_index(
        "ix_message_tombstones_deleted_at",
        "message_tombstones",
        ["deleted_at"],
        unique=False,
        schema="notifier",
    )


def downgrade() -> None:
    op.drop_index("ix_message_tombstones_deleted_at", table_name="message_tombstones", schema="notifier")
    op.drop_index("ix_inbox_handled_at", table_name="inbox", schema="notifier")
    for column in ("prior_cooldown_level", "prior_notified_seq", "prior_notified_at", "fallback_of"):
        op.drop_column("notifications", column, schema="notifier")
