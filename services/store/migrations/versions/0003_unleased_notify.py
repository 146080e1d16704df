"""Outbox NOTIFY for rows without a lease only: a send batch's leased rows wake no relay.

Revision ID: store_0003
Revises: store_0002
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

from shared.outbox import outbox_trigger_sql

revision: str = "store_0003"
down_revision: str | None = "store_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "store"


def upgrade() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS outbox_notify ON {S}.outbox")
    for statement in outbox_trigger_sql(S, leased=True):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS outbox_notify ON {S}.outbox")
    for statement in outbox_trigger_sql(S):
        op.execute(statement)
