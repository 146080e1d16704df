"""Event builders, a controllable clock and event-driven waits for the notifier tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.tables import attempts, inbox, notifications, threads, unread_messages
from shared.events import (
    EventBase,
    MessageRead,
    MessageReadPayload,
    MessageUnread,
    MessageUnreadPayload,
    NotificationPreferences,
    PresenceChanged,
    PresencePayload,
    PresenceState,
    Role,
    UserPayload,
    UserRegistered,
)

T = TypeVar("T")


class FakeClock:
    """Business time the test moves forward; leases keep using the database's real clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def wait_until(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(interval)


def user(
    *,
    user_id: uuid.UUID | None = None,
    name: str = "Rita Recipient",
    email: str | None = "__auto__",
    phone: str | None = None,
    email_enabled: bool = True,
    sms_enabled: bool = False,
    role: Role = "USER",
    quiet: tuple[str, str] | None = None,
    timezone: str = "UTC",
) -> UserRegistered:
    uid = user_id or uuid.uuid4()
    return UserRegistered(
        payload=UserPayload(
            user_id=uid,
            username=f"u{uid.hex[:8]}",
            display_name=name,
            email=f"{uid.hex[:10]}@example.test" if email == "__auto__" else email,
            phone=phone,
            role=role,
            preferences=NotificationPreferences(
                email_enabled=email_enabled,
                sms_enabled=sms_enabled,
                quiet_hours_start=quiet[0] if quiet else None,
                quiet_hours_end=quiet[1] if quiet else None,
                timezone=timezone,
            ),
        )
    )


def unread(
    recipient: uuid.UUID,
    conversation: uuid.UUID,
    seq: int,
    *,
    body: str | None = None,
    sender: str = "Adam Admin",
    at: datetime | None = None,
) -> MessageUnread:
    return MessageUnread(
        payload=MessageUnreadPayload(
            recipient_id=recipient,
            message_id=uuid.uuid4(),
            conversation_id=conversation,
            seq=seq,
            sender_id=uuid.UUID(int=7),
            sender_name=sender,
            body=body if body is not None else f"message number {seq}",
            created_at=at or datetime.now(UTC),
        )
    )


def read(reader: uuid.UUID, conversation: uuid.UUID, seq: int) -> MessageRead:
    return MessageRead(payload=MessageReadPayload(conversation_id=conversation, reader_id=reader, seq=seq))


def presence(
    user_id: uuid.UUID, state: PresenceState, *, last_seen: datetime, connections: int = 1
) -> PresenceChanged:
    return PresenceChanged(
        payload=PresencePayload(user_id=user_id, state=state, last_seen=last_seen, connections=connections)
    )


async def notifications_of(
    sessions: async_sessionmaker[AsyncSession], recipient: uuid.UUID
) -> Sequence[RowMapping]:
    async with sessions() as session:
        result = await session.execute(
            select(notifications)
            .where(notifications.c.recipient_id == recipient)
            .order_by(notifications.c.created_at)
        )
        return result.mappings().all()


async def thread_of(
    sessions: async_sessionmaker[AsyncSession], recipient: uuid.UUID, conversation: uuid.UUID
) -> RowMapping | None:
    async with sessions() as session:
        result = await session.execute(
            select(threads).where(
                threads.c.recipient_id == recipient, threads.c.conversation_id == conversation
            )
        )
        return result.mappings().first()


async def unread_count(sessions: async_sessionmaker[AsyncSession], recipient: uuid.UUID) -> int:
    async with sessions() as session:
        result = await session.execute(
            select(unread_messages.c.seq).where(unread_messages.c.recipient_id == recipient)
        )
        return len(result.all())


async def attempts_of(
    sessions: async_sessionmaker[AsyncSession], notification_id: Any
) -> Sequence[RowMapping]:
    async with sessions() as session:
        result = await session.execute(
            select(attempts).where(attempts.c.notification_id == notification_id).order_by(attempts.c.attempt)
        )
        return result.mappings().all()


async def consumed(sessions: async_sessionmaker[AsyncSession], *events: EventBase) -> None:
    """Wait until the notifier committed these events (its queue is consumed concurrently)."""
    wanted = {e.id for e in events}

    async def probe() -> bool:
        async with sessions() as session:
            result = await session.execute(select(inbox.c.event_id).where(inbox.c.event_id.in_(wanted)))
            return len(result.all()) == len(wanted)

    await wait_until(probe, what=f"{len(wanted)} events to be consumed")


def vonage_settings(vonage: Any) -> dict[str, str]:
    """Notifier settings that send SMS through the real Vonage SDK to the local stub."""
    env = vonage.env()
    return {
        "sms_provider": "vonage",
        "vonage_api_key": env["NOTIFIER_VONAGE_API_KEY"],
        "vonage_api_secret": env["NOTIFIER_VONAGE_API_SECRET"],
        "vonage_rest_host": vonage.rest_host,
        "vonage_ca_bundle": str(vonage.ca_path),
    }


async def final_notifications(
    sessions: async_sessionmaker[AsyncSession], recipient: uuid.UUID, count: int
) -> Sequence[RowMapping]:
    """Wait until ``recipient`` has ``count`` notifications, none of them still queued or sending."""

    async def probe() -> Sequence[RowMapping] | None:
        rows = await notifications_of(sessions, recipient)
        settled = len(rows) == count and all(r["status"] not in ("queued", "sending") for r in rows)
        return rows if settled else None

    found = await wait_until(probe, what=f"{count} settled notifications")
    assert found is not None
    return found
