"""The scheduler's SQL, set-based: a batch of due threads is locked, read and decided in a fixed
number of statements, whatever its size.

Fixed ``text()`` statements over ``unnest`` arrays: SQLAlchemy compiles each once and asyncpg
keeps it prepared, where multi-row ``VALUES`` or expanding ``IN`` would be compiled per call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters.repository import LOCK_NAMESPACE, lock_key, recipient_from, unread_from
from services.notifier.domain.model import Presence, Recipient, UnreadMessage

Pair = tuple[uuid.UUID, uuid.UUID]  # (recipient, conversation)

_TRY_LOCK = text(
    """
    SELECT u.user_id FROM unnest(CAST(:users AS uuid[]), CAST(:keys AS int[])) AS u(user_id, key)
    WHERE pg_try_advisory_xact_lock(:namespace, u.key)
    """
)

_PROFILES = text(
    """
    SELECT r.user_id, r.username, r.display_name, r.role, r.email, r.phone, r.email_enabled,
           r.sms_enabled, r.quiet_start, r.quiet_end, r.timezone,
           p.state AS presence_state, p.last_seen AS presence_last_seen
    FROM notifier.recipients r LEFT JOIN notifier.presence p ON p.user_id = r.user_id
    WHERE r.user_id = ANY(CAST(:users AS uuid[]))
    """
)

# A tombstone marks a message deleted even if it won a race against its message.unread.
_UNREAD = text(
    """
    SELECT m.recipient_id, m.conversation_id, m.seq, m.sender_id, m.sender_name, m.body, m.created_at,
           m.deleted OR EXISTS (
               SELECT 1 FROM notifier.message_tombstones t WHERE t.message_id = m.message_id
           ) AS deleted
    FROM unnest(CAST(:recipients AS uuid[]), CAST(:conversations AS uuid[]))
         AS k(recipient_id, conversation_id)
    JOIN notifier.unread_messages m
      ON m.recipient_id = k.recipient_id AND m.conversation_id = k.conversation_id
    ORDER BY m.recipient_id, m.conversation_id, m.seq
    """
)

# Column name -> PostgreSQL array type of the decisions written in one statement.
NOTIFICATION_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "idempotency_key": "text",
    "kind": "text",
    "priority": "smallint",
    "recipient_id": "uuid",
    "conversation_id": "uuid",
    "channel": "text",
    "destination": "text",
    "subject": "text",
    "body_text": "text",
    "body_html": "text",
    "message_count": "int",
    "max_seq": "bigint",
    "first_message_at": "timestamptz",
    "status": "text",
    "reason": "text",
    "created_at": "timestamptz",
    "prior_notified_at": "timestamptz",
    "prior_notified_seq": "bigint",
    "prior_cooldown_level": "int",
}

_INSERT_NOTIFICATIONS = text(
    "INSERT INTO notifier.notifications ({names}) SELECT * FROM unnest({arrays})"  # noqa: S608 - constants
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key".format(
        names=", ".join(NOTIFICATION_COLUMNS),
        arrays=", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in NOTIFICATION_COLUMNS.items()),
    )
)

# What a decision may change on a thread; every value is written (the rows are locked).
THREAD_COLUMNS: dict[str, str] = {
    "due_at": "timestamptz",
    "defer_reason": "text",
    "opened_at": "timestamptz",
    "last_notified_at": "timestamptz",
    "notified_seq": "bigint",
    "cooldown_level": "int",
}

_UPDATE_THREADS = text(
    "UPDATE notifier.threads t SET {sets} FROM unnest(CAST(:recipient_id AS uuid[]),"  # noqa: S608 - constants
    " CAST(:conversation_id AS uuid[]), {arrays}) AS v(recipient_id, conversation_id, {names})"
    " WHERE t.recipient_id = v.recipient_id AND t.conversation_id = v.conversation_id".format(
        sets=", ".join(f"{name} = v.{name}" for name in THREAD_COLUMNS),
        arrays=", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in THREAD_COLUMNS.items()),
        names=", ".join(THREAD_COLUMNS),
    )
)


async def try_lock_recipients(*, session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The recipients whose advisory lock this transaction got; the others are being changed right
    now (profile, presence) and are decided at the next pass. Never waits: no deadlock with row locks."""
    users = sorted(set(user_ids))
    if not users:
        return set()
    result = await session.execute(
        _TRY_LOCK,
        {"users": users, "keys": [lock_key(u) for u in users], "namespace": LOCK_NAMESPACE},
    )
    return {user_id for (user_id,) in result.all()}


async def load_profiles(
    *, session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[Recipient, Presence | None]]:
    """Known recipients with their presence (a recipient missing here is unknown)."""
    result = await session.execute(_PROFILES, {"users": list(user_ids)})
    found: dict[uuid.UUID, tuple[Recipient, Presence | None]] = {}
    for row in result.mappings():
        state, last_seen = row["presence_state"], row["presence_last_seen"]
        found[row["user_id"]] = (
            recipient_from(row),
            None if state is None else Presence(state=state, last_seen=last_seen),
        )
    return found


async def load_unread(
    *, session: AsyncSession, pairs: Sequence[Pair]
) -> dict[Pair, tuple[UnreadMessage, ...]]:
    """Every pair's unread messages in ``seq`` order (pairs with none are left out)."""
    result = await session.execute(
        _UNREAD, {"recipients": [r for r, _ in pairs], "conversations": [c for _, c in pairs]}
    )
    found: dict[Pair, list[UnreadMessage]] = {}
    for m in result.mappings():
        found.setdefault((m["recipient_id"], m["conversation_id"]), []).append(
            unread_from(m, deleted=m["deleted"])
        )
    return {pair: tuple(messages) for pair, messages in found.items()}


async def insert_notifications(*, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Record decisions under their idempotency keys; returns the keys that were new (a key seen
    before is a decision already taken)."""
    if not rows:
        return set()
    params = {name: [row.get(name) for row in rows] for name in NOTIFICATION_COLUMNS}
    result = await session.execute(_INSERT_NOTIFICATIONS, params)
    return {key for (key,) in result.all()}


async def update_threads(*, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write every column of ``THREAD_COLUMNS`` (and the keys) of each row, in one statement."""
    if not rows:
        return
    names = ("recipient_id", "conversation_id", *THREAD_COLUMNS)
    await session.execute(_UPDATE_THREADS, {name: [row[name] for row in rows] for name in names})


def thread_state(row: RowMapping) -> dict[str, Any]:
    """The locked row's current values of what a decision may change (keys included)."""
    return {name: row[name] for name in ("recipient_id", "conversation_id", *THREAD_COLUMNS)}
