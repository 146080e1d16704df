"""Auth schema: users, refresh families and tokens, phone codes, link tokens, rate limits, audit, outbox.

Revision ID: auth_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from shared.outbox import outbox_trigger_sql

revision: str = "auth_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "auth"


def _ts(name: str, nullable: bool = False, default: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False, server_default="USER"),
        sa.Column("display_name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("phone", sa.Text),
        sa.Column("phone_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("preferences", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        _ts("password_changed_at", default=True),
        _ts("created_at", default=True),
        _ts("updated_at", default=True),
        sa.CheckConstraint("role IN ('USER', 'ADMIN')", name="role"),
        schema=S,
    )
    op.execute(f"CREATE UNIQUE INDEX uq_users_username_lower ON {S}.users (lower(username))")
    op.execute(
        f"CREATE UNIQUE INDEX uq_users_email_lower ON {S}.users (lower(email)) WHERE email IS NOT NULL"
    )
    op.execute(f"CREATE INDEX ix_users_created_at ON {S}.users (created_at, id)")

    op.create_table(
        "refresh_families",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        _ts("created_at", default=True),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.Text),
        schema=S,
    )
    op.execute(
        f"CREATE INDEX ix_refresh_families_user_live ON {S}.refresh_families (user_id)"
        " WHERE revoked_at IS NULL"
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column(
            "family_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.refresh_families.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
        _ts("created_at", default=True),
        _ts("expires_at"),
        _ts("rotated_at", nullable=True),
        schema=S,
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"], schema=S)

    op.create_table(
        "phone_verifications",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("code_hash", sa.LargeBinary, nullable=False),
        _ts("created_at", default=True),
        _ts("expires_at"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("consumed_at", nullable=True),
        schema=S,
    )
    op.create_index(
        "ix_phone_verifications_user_phone",
        "phone_verifications",
        ["user_id", "phone", "created_at"],
        schema=S,
    )

    op.create_table(
        "action_tokens",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.Text, nullable=False),
        _ts("created_at", default=True),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        schema=S,
    )

    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        _ts("expires_at"),
        schema=S,
    )
    op.create_index("ix_rate_limits_expires_at", "rate_limits", ["expires_at"], schema=S)

    op.create_table(
        "cooldowns",
        sa.Column("key", sa.Text, primary_key=True),
        _ts("until"),
        schema=S,
    )
    op.create_index("ix_cooldowns_until", "cooldowns", ["until"], schema=S)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _ts("at", default=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True)),
        sa.Column("actor_id", pg.UUID(as_uuid=True)),
        sa.Column("ip", sa.Text),
        sa.Column("detail", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=S,
    )
    op.create_index("ix_audit_log_user_id", "audit_log", ["user_id"], schema=S)

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("persistent", sa.Boolean, nullable=False, server_default=sa.true()),
        _ts("created_at", default=True),
        schema=S,
    )
    for statement in outbox_trigger_sql(S):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
