"""SQL for the projections, the pending threads and the notification log (this service's schema only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, case, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters.tables import (
    attempts,
    inbox,
    message_tombstones,
    notifications,
    presence,
    recipients,
    threads,
    unread_messages,
)
from services.notifier.domain.model import Recipient, Thread, UnreadMessage, Window
from shared.db import session_driver
from shared.events import MessagePayload, MessageUnreadPayload, PresencePayload, UserPayload

# --- per-recipient serialisation ----------------------------------------------

LOCK_NAMESPACE = 0x6E6F7469  # "noti": keeps our advisory locks apart from other services'


def lock_key(user_id: uuid.UUID) -> int:
    return int.from_bytes(user_id.bytes[:4], "big", signed=True)


async def lock_recipient(*, session: AsyncSession, user_id: uuid.UUID) -> None:
    """Serialise projection updates of one user with the scheduler's decisions about them.

    Without it a decision made from a projection read just before a concurrent update commits
    (an unknown or active recipient) could be deferred for its whole retry time.
    """
    await session.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, lock_key(user_id))))


# --- projections -------------------------------------------------------------


async def upsert_recipient(*, session: AsyncSession, user: UserPayload, version_at: datetime) -> None:
    """Apply a user.* event unless a newer one was applied already (events may arrive out of order)."""
    prefs = user.preferences
    values = {
        "user_id": user.user_id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "email": user.email,
        "phone": user.phone,
        "email_enabled": prefs.email_enabled,
        "sms_enabled": prefs.sms_enabled,
        "quiet_start": prefs.quiet_hours_start,
        "quiet_end": prefs.quiet_hours_end,
        "timezone": prefs.timezone,
        "version_at": version_at,
    }
    stmt = insert(recipients).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[recipients.c.user_id],
            set_={k: stmt.excluded[k] for k in values if k != "user_id"},
            where=recipients.c.version_at <= stmt.excluded.version_at,
        )
    )


async def upsert_presence(*, session: AsyncSession, state: PresencePayload, version_at: datetime) -> bool:
    """Apply a presence.changed event if it is the newest; True when applied."""
    stmt = insert(presence).values(
        user_id=state.user_id,
        state=state.state,
        last_seen=state.last_seen,
        connections=state.connections,
        version_at=version_at,
    )
    result = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[presence.c.user_id],
            set_={
                "state": stmt.excluded.state,
                "last_seen": stmt.excluded.last_seen,
                "connections": stmt.excluded.connections,
                "version_at": stmt.excluded.version_at,
            },
            where=presence.c.version_at <= stmt.excluded.version_at,
        ).returning(presence.c.user_id)
    )
    return result.first() is not None


async def recheck_deferred(*, session: AsyncSession, user_id: uuid.UUID, reason: str, now: datetime) -> bool:
    """Work deferred for ``reason`` (they were active, we did not know them yet) is due again now.

    Rows still undecided (no reason yet) are matched too: if the scheduler holds one right now,
    this waits for its commit and then re-checks the row's new version, so a deferral decided
    concurrently from stale data is not left waiting for its full retry time.
    """
    result = await session.execute(
        update(threads)
        .where(
            threads.c.recipient_id == user_id,
            threads.c.due_at.is_not(None),
            or_(threads.c.defer_reason == reason, threads.c.defer_reason.is_(None)),
        )
        .values(due_at=case((threads.c.defer_reason == reason, now), else_=threads.c.due_at))
        .returning(threads.c.defer_reason)
    )
    return any(r == reason for (r,) in result.all())


async def _lock_thread(
    session: AsyncSession, recipient_id: uuid.UUID, conversation_id: uuid.UUID
) -> RowMapping:
    await session.execute(
        insert(threads)
        .values(recipient_id=recipient_id, conversation_id=conversation_id)
        .on_conflict_do_nothing()
    )
    row = (
        (
            await session.execute(
                select(threads)
                .where(threads.c.recipient_id == recipient_id, threads.c.conversation_id == conversation_id)
                .with_for_update()
            )
        )
        .mappings()
        .one()
    )
    return row


async def record_unread(
    *,
    session: AsyncSession,
    message: MessageUnreadPayload,
    now: datetime,
    window: Window,
) -> bool:
    """Open or extend the pending window of (recipient, conversation); False if already read."""
    thread = await _lock_thread(session, message.recipient_id, message.conversation_id)
    if message.seq <= thread["read_seq"]:
        return False
    tombstone = await session.execute(
        select(message_tombstones.c.message_id).where(message_tombstones.c.message_id == message.message_id)
    )
    if tombstone.first() is not None:
        return False  # deleted before we even heard of it
    await session.execute(
        insert(unread_messages)
        .values(
            recipient_id=message.recipient_id,
            conversation_id=message.conversation_id,
            seq=message.seq,
            message_id=message.message_id,
            sender_id=message.sender_id,
            sender_name=message.sender_name,
            body=message.body[:2000],
            created_at=message.created_at,
        )
        .on_conflict_do_nothing()
    )
    due = window.due(
        current=thread["due_at"], opened_at=thread["opened_at"], sent_at=message.created_at, now=now
    )
    if thread["due_at"] is None:
        values: dict[str, Any] = {"opened_at": now, "due_at": due, "defer_reason": None}
    else:
        values = {"due_at": due}
    await session.execute(
        update(threads)
        .where(
            threads.c.recipient_id == message.recipient_id,
            threads.c.conversation_id == message.conversation_id,
        )
        .values(**values)
    )
    return True


# The hot event's statements run on the session's asyncpg connection, inside its transaction:
# SQLAlchemy's per-statement work cost more than the statements themselves.
_OPEN_THREADS = """
    INSERT INTO notifier.threads (recipient_id, conversation_id)
    SELECT * FROM unnest($1::uuid[], $2::uuid[])
    ON CONFLICT DO NOTHING
"""

# Locked in key order, like every batch: two batches never wait on each other in a cycle.
_LOCK_THREADS = """
    SELECT t.recipient_id, t.conversation_id, t.read_seq, t.due_at, t.opened_at, t.defer_reason
    FROM notifier.threads t
    JOIN unnest($1::uuid[], $2::uuid[]) AS k(r, c) ON t.recipient_id = k.r AND t.conversation_id = k.c
    ORDER BY t.recipient_id, t.conversation_id
    FOR UPDATE OF t
"""

_TOMBSTONED = "SELECT message_id FROM notifier.message_tombstones WHERE message_id = ANY($1::uuid[])"

_INSERT_UNREAD = """
    INSERT INTO notifier.unread_messages
        (recipient_id, conversation_id, seq, message_id, sender_id, sender_name, body, created_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::uuid[], $6::text[],
                         $7::text[], $8::timestamptz[])
    ON CONFLICT DO NOTHING
"""

_SET_WINDOWS = """
    UPDATE notifier.threads t SET opened_at = v.opened_at, due_at = v.due_at, defer_reason = v.defer_reason
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::text[])
         AS v(recipient_id, conversation_id, opened_at, due_at, defer_reason)
    WHERE t.recipient_id = v.recipient_id AND t.conversation_id = v.conversation_id
"""


async def record_unreads(
    *,
    session: AsyncSession,
    messages: Sequence[MessageUnreadPayload],
    now: datetime,
    window: Window,
) -> bool:
    """``record_unread`` for a run of consecutive events in five fixed statements (the consumer's
    batches): the same decisions, in the same order, on the locked threads' rows.
    True when any of them opened a pending window."""
    if not messages:
        return False
    pg = await session_driver(session)
    keys = sorted({(m.recipient_id, m.conversation_id) for m in messages})
    pairs = ([r for r, _ in keys], [c for _, c in keys])
    await pg.execute(_OPEN_THREADS, *pairs)
    state = {
        (row["recipient_id"], row["conversation_id"]): dict(row.items())
        for row in await pg.fetch(_LOCK_THREADS, *pairs)
    }
    ids = list({m.message_id for m in messages})
    tombstoned = {row["message_id"] for row in await pg.fetch(_TOMBSTONED, ids)}
    fresh: list[MessageUnreadPayload] = []
    changed: set[tuple[uuid.UUID, uuid.UUID]] = set()
    opened_any = False
    for m in messages:
        key = (m.recipient_id, m.conversation_id)
        thread = state[key]
        if m.seq <= thread["read_seq"] or m.message_id in tombstoned:
            continue
        fresh.append(m)
        due = window.due(
            current=thread["due_at"], opened_at=thread["opened_at"], sent_at=m.created_at, now=now
        )
        if thread["due_at"] is None:
            thread.update(opened_at=now, due_at=due, defer_reason=None)
            opened_any = True
        else:
            thread["due_at"] = due
        changed.add(key)
    if fresh:
        await pg.execute(
            _INSERT_UNREAD,
            [m.recipient_id for m in fresh],
            [m.conversation_id for m in fresh],
            [m.seq for m in fresh],
            [m.message_id for m in fresh],
            [m.sender_id for m in fresh],
            [m.sender_name for m in fresh],
            [m.body[:2000] for m in fresh],
            [m.created_at for m in fresh],
        )
        rows = [state[key] for key in sorted(changed)]
        await pg.execute(
            _SET_WINDOWS,
            [r["recipient_id"] for r in rows],
            [r["conversation_id"] for r in rows],
            [r["opened_at"] for r in rows],
            [r["due_at"] for r in rows],
            [r["defer_reason"] for r in rows],
        )
    return opened_any


async def apply_read(
    *, session: AsyncSession, conversation_id: uuid.UUID, reader_id: uuid.UUID, seq: int
) -> bool:
    """Move the read position; True when this closed a pending window (nothing left to tell)."""
    thread = await _lock_thread(session, reader_id, conversation_id)
    if seq <= thread["read_seq"]:
        return False
    await session.execute(
        delete(unread_messages).where(
            unread_messages.c.recipient_id == reader_id,
            unread_messages.c.conversation_id == conversation_id,
            unread_messages.c.seq <= seq,
        )
    )
    remaining = (
        await session.execute(
            select(func.count())
            .select_from(unread_messages)
            .where(
                unread_messages.c.recipient_id == reader_id,
                unread_messages.c.conversation_id == conversation_id,
                unread_messages.c.deleted.is_(False),
            )
        )
    ).scalar_one()
    closes = remaining == 0 and thread["due_at"] is not None
    values: dict[str, Any] = {"read_seq": seq, "cooldown_level": min(thread["cooldown_level"], 1)}
    if remaining == 0:
        values.update(due_at=None, defer_reason=None, opened_at=None)
    await session.execute(
        update(threads)
        .where(threads.c.recipient_id == reader_id, threads.c.conversation_id == conversation_id)
        .values(**values)
    )
    return closes


async def set_silence_until_read(
    *, session: AsyncSession, recipient_id: uuid.UUID, conversation_id: uuid.UUID, enabled: bool
) -> None:
    await _lock_thread(session, recipient_id, conversation_id)
    await session.execute(
        update(threads)
        .where(threads.c.recipient_id == recipient_id, threads.c.conversation_id == conversation_id)
        .values(silence_until_read=enabled)
    )


async def apply_message_update(*, session: AsyncSession, message: MessagePayload) -> None:
    """Edits change what a digest quotes; deletions take the message out of it (even if early)."""
    if message.deleted_at is not None:
        await session.execute(
            insert(message_tombstones)
            .values(message_id=message.message_id, deleted_at=message.deleted_at)
            .on_conflict_do_nothing()
        )
    await session.execute(
        update(unread_messages)
        .where(unread_messages.c.message_id == message.message_id)
        .values(body=message.body[:2000], deleted=message.deleted_at is not None)
    )


# --- scheduling --------------------------------------------------------------


async def claim_due_threads(*, session: AsyncSession, now: datetime, limit: int) -> Sequence[RowMapping]:
    """Lock due threads; another replica skips them (and never waits) until this transaction ends."""
    result = await session.execute(
        select(threads)
        .where(threads.c.due_at.is_not(None), threads.c.due_at <= now)
        .order_by(threads.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.mappings().all()


async def next_due_at(*, session: AsyncSession) -> datetime | None:
    result = await session.execute(select(func.min(threads.c.due_at)).where(threads.c.due_at.is_not(None)))
    value: datetime | None = result.scalar_one_or_none()
    return value


async def load_recipient(*, session: AsyncSession, user_id: uuid.UUID) -> Recipient | None:
    row = (
        (await session.execute(select(recipients).where(recipients.c.user_id == user_id))).mappings().first()
    )
    return None if row is None else recipient_from(row)


def recipient_from(row: RowMapping) -> Recipient:
    """A ``recipients`` row as the rules see it."""
    return Recipient(
        user_id=row["user_id"],
        display_name=row["display_name"] or row["username"],
        role=row["role"],
        email=row["email"],
        phone=row["phone"],
        email_enabled=row["email_enabled"],
        sms_enabled=row["sms_enabled"],
        quiet_start=row["quiet_start"],
        quiet_end=row["quiet_end"],
        timezone=row["timezone"],
    )


async def load_thread(*, session: AsyncSession, row: RowMapping) -> Thread:
    """The thread with its unread messages; a tombstone marks a message deleted even if it won a race."""
    tombstoned = (
        select(message_tombstones.c.message_id)
        .where(message_tombstones.c.message_id == unread_messages.c.message_id)
        .exists()
    )
    result = await session.execute(
        select(unread_messages, tombstoned.label("tombstoned"))
        .where(
            unread_messages.c.recipient_id == row["recipient_id"],
            unread_messages.c.conversation_id == row["conversation_id"],
        )
        .order_by(unread_messages.c.seq)
    )
    unread = tuple(unread_from(m, deleted=m["deleted"] or m["tombstoned"]) for m in result.mappings())
    return thread_from(row, unread)


def unread_from(row: RowMapping, *, deleted: bool) -> UnreadMessage:
    """An ``unread_messages`` row as the rules see it; ``deleted`` also counts a tombstone."""
    return UnreadMessage(
        seq=row["seq"],
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        body=row["body"],
        created_at=row["created_at"],
        deleted=deleted,
    )


def thread_from(row: RowMapping, unread: tuple[UnreadMessage, ...]) -> Thread:
    """A thread row and its unread messages as the rules see them."""
    return Thread(
        recipient_id=row["recipient_id"],
        conversation_id=row["conversation_id"],
        opened_at=row["opened_at"],
        notified_seq=row["notified_seq"],
        silence_until_read=row["silence_until_read"],
        read_seq=row["read_seq"],
        last_notified_at=row["last_notified_at"],
        cooldown_level=row["cooldown_level"],
        unread=unread,
    )


async def load_thread_of(
    *, session: AsyncSession, recipient_id: uuid.UUID, conversation_id: uuid.UUID
) -> Thread | None:
    row = (
        (
            await session.execute(
                select(threads).where(
                    threads.c.recipient_id == recipient_id, threads.c.conversation_id == conversation_id
                )
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else await load_thread(session=session, row=row)


async def release_cooldown(*, session: AsyncSession, notification: RowMapping, now: datetime) -> bool:
    """Give back the cooldown a digest reserved when it was decided, as it never reached anyone.

    Only while the thread still carries this digest's reservation (a later digest keeps its
    own); a read in between keeps its reset; news held back by that cooldown is due now.
    True when the thread was changed.
    """
    if notification["kind"] != "digest" or notification["prior_cooldown_level"] is None:
        return False
    result = await session.execute(
        update(threads)
        .where(
            threads.c.recipient_id == notification["recipient_id"],
            threads.c.conversation_id == notification["conversation_id"],
            threads.c.notified_seq == notification["max_seq"],
        )
        .values(
            last_notified_at=notification["prior_notified_at"],
            notified_seq=notification["prior_notified_seq"],
            cooldown_level=func.least(threads.c.cooldown_level, notification["prior_cooldown_level"]),
            due_at=case(
                (threads.c.defer_reason == "cooldown", func.least(threads.c.due_at, now)),
                else_=threads.c.due_at,
            ),
        )
        .returning(threads.c.recipient_id)
    )
    return result.first() is not None


# --- the notification log ----------------------------------------------------


async def insert_notification(*, session: AsyncSession, **values: Any) -> bool:
    """Record a decision under its idempotency key; False when that decision was already taken."""
    values.setdefault("id", uuid.uuid4())
    result = await session.execute(
        insert(notifications)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[notifications.c.idempotency_key])
        .returning(notifications.c.id)
    )
    return result.first() is not None


# Most urgent first; a lapsed lease means the sender died. Decided at send time: a digest whose
# messages were all read since its decision comes back with ``read``.
_CLAIM = text(
    """
    WITH picked AS (
        SELECT id, status AS was FROM notifier.notifications
        WHERE (status = 'queued' OR (status = 'sending' AND lease_until < now()))
          AND priority <= :max_priority
        ORDER BY priority, created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE notifier.notifications n
    SET status = 'sending', lease_until = now() + CAST(:lease AS interval)
    FROM picked WHERE n.id = picked.id
    RETURNING n.*, picked.was = 'sending' AS reclaimed, coalesce((
        SELECT t.read_seq >= n.max_seq FROM notifier.threads t
        WHERE n.kind = 'digest' AND t.recipient_id = n.recipient_id
          AND t.conversation_id = n.conversation_id
    ), false) AS read
    """
)
_ANY_PRIORITY = 32767


async def claim_sendable(
    *, session: AsyncSession, limit: int, lease: timedelta, max_priority: int | None = None
) -> Sequence[RowMapping]:
    """Take queued work, or work whose sender vanished (lease expired), most urgent first.

    Leases use the database clock so every replica agrees on them. Each row comes back with
    ``reclaimed``: True when a previous sender's lease lapsed, so its outcome is unknown, and
    ``read``: True for a digest whose messages were all read since it was decided. One fixed
    statement, so it can run outside an explicit transaction (one round trip).
    """
    result = await session.execute(
        _CLAIM,
        {
            "limit": limit,
            "lease": lease,
            "max_priority": _ANY_PRIORITY if max_priority is None else max_priority,
        },
    )
    return sorted(result.mappings().all(), key=lambda r: (r["priority"], r["created_at"]))


async def renew_lease(*, session: AsyncSession, notification_id: uuid.UUID, lease: timedelta) -> None:
    await session.execute(
        update(notifications)
        .where(notifications.c.id == notification_id, notifications.c.status == "sending")
        .values(lease_until=func.now() + lease)
    )


_RECORD_ATTEMPT = text(
    """
    WITH counted AS (
        UPDATE notifier.notifications SET attempts = attempts + 1 WHERE id = :id RETURNING attempts
    )
    INSERT INTO notifier.attempts (notification_id, attempt, channel, status, provider_id, error)
    SELECT :id, attempts, :channel, :status, :provider_id, :error FROM counted
    RETURNING attempt
    """
)

# The accepted attempt and the closed notification, in one statement.
_RECORD_SENT = text(
    """
    WITH counted AS (
        UPDATE notifier.notifications
        SET attempts = attempts + 1, status = 'sent', lease_until = NULL,
            provider_id = :provider_id, sent_at = :sent_at,
            body_text = CASE WHEN :drop_secrets THEN NULL ELSE body_text END,
            body_html = CASE WHEN :drop_secrets THEN NULL ELSE body_html END
        WHERE id = :id RETURNING attempts
    )
    INSERT INTO notifier.attempts (notification_id, attempt, channel, status, provider_id, error)
    SELECT :id, attempts, :channel, :status, :provider_id, :error FROM counted
    RETURNING attempt
    """
)


async def record_attempt(
    *,
    session: AsyncSession,
    notification_id: uuid.UUID,
    channel: str,
    status: str,
    provider_id: str | None = None,
    error: str | None = None,
    sent_at: datetime | None = None,
    drop_secrets: bool = False,
) -> int:
    """Count an attempt on the notification and keep its row; returns the attempt number.

    With ``sent_at`` the notification is closed as sent by the same statement (and with
    ``drop_secrets`` its codes and links are dropped): no lease can lapse in between.
    """
    params: dict[str, Any] = {
        "id": notification_id,
        "channel": channel,
        "status": status,
        "provider_id": provider_id,
        "error": error,
    }
    if sent_at is None:
        result = await session.execute(_RECORD_ATTEMPT, params)
    else:
        result = await session.execute(
            _RECORD_SENT, params | {"sent_at": sent_at, "drop_secrets": drop_secrets}
        )
    return int(result.scalar_one())


async def finish_notification(
    *, session: AsyncSession, notification_id: uuid.UUID, status: str, **values: Any
) -> None:
    """Close a notification; secrets (OTP text) are dropped once they are no longer needed."""
    await session.execute(
        update(notifications)
        .where(notifications.c.id == notification_id)
        .values(status=status, lease_until=None, **values)
    )


async def recent_notifications(
    *,
    session: AsyncSession,
    limit: int,
    recipient_id: uuid.UUID | None = None,
    status: str | None = None,
) -> Sequence[RowMapping]:
    stmt = select(
        notifications.c.id,
        notifications.c.kind,
        notifications.c.recipient_id,
        notifications.c.conversation_id,
        notifications.c.channel,
        notifications.c.destination,
        notifications.c.status,
        notifications.c.reason,
        notifications.c.attempts,
        notifications.c.provider_id,
        notifications.c.message_count,
        notifications.c.created_at,
        notifications.c.sent_at,
        notifications.c.fallback_of,
    ).order_by(notifications.c.created_at.desc())
    if recipient_id is not None:
        stmt = stmt.where(notifications.c.recipient_id == recipient_id)
    if status is not None:
        stmt = stmt.where(notifications.c.status == status)
    return (await session.execute(stmt.limit(limit))).mappings().all()


async def pending_threads(
    *, session: AsyncSession, limit: int, recipient_id: uuid.UUID | None = None
) -> Sequence[RowMapping]:
    stmt = (
        select(
            threads.c.recipient_id,
            threads.c.conversation_id,
            threads.c.due_at,
            threads.c.defer_reason,
            threads.c.cooldown_level,
            threads.c.last_notified_at,
        )
        .where(threads.c.due_at.is_not(None))
        .order_by(threads.c.due_at)
    )
    if recipient_id is not None:
        stmt = stmt.where(threads.c.recipient_id == recipient_id)
    return (await session.execute(stmt.limit(limit))).mappings().all()


async def attempts_of(*, session: AsyncSession, notification_id: uuid.UUID) -> Sequence[RowMapping]:
    result = await session.execute(
        select(attempts).where(attempts.c.notification_id == notification_id).order_by(attempts.c.attempt)
    )
    return result.mappings().all()


# --- retention -----------------------------------------------------------------


async def prune_finished_notifications(*, session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished notifications created before ``before``, with their attempts.

    Work still queued or being sent is never touched; rows another replica is pruning are skipped.
    """
    oldest = (
        select(notifications.c.id)
        .where(
            notifications.c.created_at < before,
            notifications.c.status.not_in(("queued", "sending")),
        )
        .order_by(notifications.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [
        i
        for (i,) in (
            await session.execute(
                delete(notifications)
                .where(notifications.c.id.in_(oldest.scalar_subquery()))
                .returning(notifications.c.id)
            )
        ).all()
    ]
    if ids:
        await session.execute(delete(attempts).where(attempts.c.notification_id.in_(ids)))
    return len(ids)


async def _prune_oldest(
    session: AsyncSession, key: Column[Any], stamp: Column[Any], *, before: datetime, limit: int
) -> int:
    """Delete up to ``limit`` rows whose ``stamp`` is older than ``before``, oldest first."""
    oldest = select(key).where(stamp < before).order_by(stamp).limit(limit).with_for_update(skip_locked=True)
    result = await session.execute(delete(key.table).where(key.in_(oldest.scalar_subquery())).returning(key))
    return len(result.all())


async def prune_inbox(*, session: AsyncSession, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` handled event ids older than ``before`` (no redelivery comes that late)."""
    return await _prune_oldest(session, inbox.c.event_id, inbox.c.handled_at, before=before, limit=limit)


async def prune_tombstones(*, session: AsyncSession, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` deletions older than ``before`` (their message.unread is long past)."""
    return await _prune_oldest(
        session,
        message_tombstones.c.message_id,
        message_tombstones.c.deleted_at,
        before=before,
        limit=limit,
    )
