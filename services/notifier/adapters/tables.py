"""The notifier's own schema: projections, pending threads, decided notifications and attempts."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from shared.db import service_metadata
from shared.inbox import inbox_table

SCHEMA = "notifier"
metadata = service_metadata(SCHEMA)
inbox = inbox_table(metadata)
Index("ix_inbox_handled_at", inbox.c.handled_at)  # retention prunes the oldest first

recipients = Table(
    "recipients",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("username", Text, nullable=False),
    Column("display_name", Text),
    Column("role", Text, nullable=False),
    Column("email", Text),
    Column("phone", Text),
    Column("email_enabled", Boolean, nullable=False),
    Column("sms_enabled", Boolean, nullable=False),
    Column("quiet_start", Text),
    Column("quiet_end", Text),
    Column("timezone", Text, nullable=False),
    Column("version_at", DateTime(timezone=True), nullable=False),  # occurred_at of the applied event
)

presence = Table(
    "presence",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("state", Text, nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("connections", Integer, nullable=False),
    Column("version_at", DateTime(timezone=True), nullable=False),
)

threads = Table(
    "threads",
    metadata,
    Column("recipient_id", UUID(as_uuid=True), primary_key=True),
    Column("conversation_id", UUID(as_uuid=True), primary_key=True),
    Column("read_seq", BigInteger, nullable=False, server_default="0"),
    Column("notified_seq", BigInteger, nullable=False, server_default="0"),
    Column("opened_at", DateTime(timezone=True)),  # when the current pending window opened
    Column("due_at", DateTime(timezone=True)),  # NULL = nothing pending
    Column("defer_reason", Text),
    Column("last_notified_at", DateTime(timezone=True)),
    Column("cooldown_level", Integer, nullable=False, server_default="0"),
    # The recipient's choice: after one notification, nothing more until they read.
    Column("silence_until_read", Boolean, nullable=False, server_default="false"),
    Index("ix_threads_due", "due_at", postgresql_where=text("due_at IS NOT NULL")),
)

unread_messages = Table(
    "unread_messages",
    metadata,
    Column("recipient_id", UUID(as_uuid=True), primary_key=True),
    Column("conversation_id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("sender_id", UUID(as_uuid=True), nullable=False),
    Column("sender_name", Text),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, server_default="false"),
)

# Deletions that may overtake their message.unread on a concurrently consumed queue.
message_tombstones = Table(
    "message_tombstones",
    metadata,
    Column("message_id", UUID(as_uuid=True), primary_key=True),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
    Index("ix_message_tombstones_deleted_at", "deleted_at"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),  # digest | otp | email_verification | password_reset
    Column("priority", SmallInteger, nullable=False),  # lower goes first: otp 0, account 1, digest 2
    Column("recipient_id", UUID(as_uuid=True)),
    Column("conversation_id", UUID(as_uuid=True)),
    Column("channel", Text),  # email | sms; NULL when suppressed before a channel was chosen
    Column("destination", Text),
    Column("subject", Text),
    Column("body_text", Text),
    Column("body_html", Text),
    Column("message_count", Integer, nullable=False, server_default="0"),
    Column("max_seq", BigInteger),
    Column("first_message_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    # queued -> sending -> sent | failed | expired | suppressed
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("provider_id", Text),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    # A digest re-sent on the fallback channel points at the notification that failed for good.
    Column("fallback_of", UUID(as_uuid=True)),
    # The thread's cooldown before this digest reserved it, given back if it is never delivered.
    Column("prior_notified_at", DateTime(timezone=True)),
    Column("prior_notified_seq", BigInteger),
    Column("prior_cooldown_level", Integer),
    Index(
        "ix_notifications_work",
        "priority",
        "created_at",
        postgresql_where=text("status IN ('queued', 'sending')"),
    ),
    Index("ix_notifications_created", "created_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("notification_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("channel", Text, nullable=False),
    Column("status", Text, nullable=False),  # sent | transient | permanent | expired
    Column("provider_id", Text),
    Column("error", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
