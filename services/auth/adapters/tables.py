"""Auth's tables, all in the ``auth`` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.db import service_metadata
from shared.outbox import outbox_table

SCHEMA = "auth"
metadata = service_metadata(SCHEMA)

# Case-insensitive uniqueness of username and email: unique indexes on lower(...) in the migration.
users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("username", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False, server_default="USER"),
    Column("display_name", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("email_verified", Boolean, nullable=False, server_default="false"),
    Column("phone", Text, nullable=True),
    Column("phone_verified", Boolean, nullable=False, server_default="false"),
    Column("preferences", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("password_changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One family per login; every refresh token descends from it. Revoking the family ends the session.
refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column(
        "family_id",
        UUID(as_uuid=True),
        ForeignKey("auth.refresh_families.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
)

phone_verifications = Table(
    "phone_verifications",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("phone", Text, nullable=False),
    Column("code_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("consumed_at", DateTime(timezone=True), nullable=True),
    Index("ix_phone_verifications_user_phone", "user_id", "phone", "created_at"),
)

# Single-use links: email verification and password reset.
action_tokens = Table(
    "action_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("purpose", Text, nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("email", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Fixed-window counters shared by every replica; rows past ``expires_at`` are swept opportunistically.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", Text, primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# "Not again before": resend cooldowns, claimed atomically.
cooldowns = Table(
    "cooldowns",
    metadata,
    Column("key", Text, primary_key=True),
    Column("until", DateTime(timezone=True), nullable=False, index=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("action", Text, nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=True, index=True),
    Column("actor_id", UUID(as_uuid=True), nullable=True),
    Column("ip", Text, nullable=True),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

outbox = outbox_table(metadata)
