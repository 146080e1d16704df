"""The store's tables (schema ``store``): conversations, messages, projections, outbox, inbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Integer,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID

from shared.db import service_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table

SCHEMA = "store"
metadata = service_metadata(SCHEMA)


def _ts(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


conversations = Table(
    "conversations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("admin_id", UUID(as_uuid=True), nullable=True),
    Column("subject", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("client_id", Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("last_activity_at"),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("last_message_preview", Text, nullable=True),
    Column("user_read_seq", BigInteger, nullable=False, server_default="0"),
    Column("admin_read_seq", BigInteger, nullable=False, server_default="0"),
    Column("user_unread", Integer, nullable=False, server_default="0"),
    Column("admin_unread", Integer, nullable=False, server_default="0"),
    _ts("flood_window_start", nullable=True),
    Column("flood_count", Integer, nullable=False, server_default="0"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("conversation_id", UUID(as_uuid=True), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", UUID(as_uuid=True), nullable=False),
    Column("client_id", Text, nullable=False),
    Column("body", Text, nullable=False),
    _ts("created_at"),
    _ts("edited_at", nullable=True),
    _ts("deleted_at", nullable=True),
    Column("tsv", TSVECTOR, Computed("to_tsvector('simple', body)", persisted=True)),
)

# Projection of user.registered / user.updated: who is an administrator, and display names.
users = Table(
    "users",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("role", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("display_name", Text, nullable=True),
    _ts("updated_at"),
)

# Projection of presence.changed: who is online (assignment) and what counterparts see.
presence = Table(
    "presence",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("state", Text, nullable=False),
    _ts("last_seen"),
    _ts("occurred_at"),
)

outbox = outbox_table(metadata)
# Delivery rows carry AMQP headers (CC: every participant's key in one publish).
outbox.append_column(Column("headers", JSONB, nullable=True))
# Rows the send path publishes itself (``OutboxRelay.hand_over``): no relay claims them before this.
outbox.append_column(_ts("leased_until", nullable=True))
inbox = inbox_table(metadata)
