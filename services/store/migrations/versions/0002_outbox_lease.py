"""Outbox lease: rows the send path hands to its own relay are not claimed by others meanwhile.

Revision ID: store_0002
Revises: store_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "store_0002"
down_revision: str | None = "store_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE store.outbox ADD COLUMN IF NOT EXISTS leased_until timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE store.outbox DROP COLUMN IF EXISTS leased_until")
