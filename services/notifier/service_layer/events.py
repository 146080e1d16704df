"""Apply one consumed event to the projections and pending work, in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters import repository as repo
from services.notifier.domain.digest import render_account_email, render_otp_sms
from services.notifier.domain.model import Window
from services.notifier.metrics import SUPPRESSED
from shared.events import (
    EmailVerificationRequested,
    EventBase,
    MessageRead,
    MessageUnread,
    MessageUpdated,
    OtpRequested,
    PasswordResetRequested,
    PresenceChanged,
    UserRegistered,
    UserUpdated,
)

PRIORITY_OTP = 0
PRIORITY_ACCOUNT = 1
PRIORITY_DIGEST = 2


@dataclass(frozen=True)
class Effect:
    """What the caller should do after the commit."""

    wake_scheduler: bool = False
    wake_dispatcher: bool = False


async def apply_event(*, session: AsyncSession, event: EventBase, now: datetime, window: Window) -> Effect:
    """Route one event; unknown types are ignored (the queue may carry more than we use)."""
    if isinstance(event, UserRegistered | UserUpdated):
        await repo.lock_recipient(session=session, user_id=event.payload.user_id)
        await repo.upsert_recipient(session=session, user=event.payload, version_at=event.occurred_at)
        due = await repo.recheck_deferred(
            session=session, user_id=event.payload.user_id, reason="unknown_recipient", now=now
        )
        return Effect(wake_scheduler=due)
    if isinstance(event, PresenceChanged):
        await repo.lock_recipient(session=session, user_id=event.payload.user_id)
        applied = await repo.upsert_presence(
            session=session, state=event.payload, version_at=event.occurred_at
        )
        if applied and event.payload.state != "active":
            due = await repo.recheck_deferred(
                session=session, user_id=event.payload.user_id, reason="active", now=now
            )
            return Effect(wake_scheduler=due)
        return Effect()
    if isinstance(event, MessageUnread):
        opened = await repo.record_unread(session=session, message=event.payload, now=now, window=window)
        return Effect(wake_scheduler=opened and window.grace <= timedelta(0))
    if isinstance(event, MessageRead):
        p = event.payload
        if await repo.apply_read(
            session=session, conversation_id=p.conversation_id, reader_id=p.reader_id, seq=p.seq
        ):
            SUPPRESSED.labels("read").inc()
        return Effect()
    if isinstance(event, MessageUpdated):
        await repo.apply_message_update(session=session, message=event.payload)
        return Effect()
    if isinstance(event, OtpRequested):
        return await _queue_otp(session=session, event=event, now=now)
    if isinstance(event, EmailVerificationRequested | PasswordResetRequested):
        return await _queue_account_email(session=session, event=event, now=now)
    return Effect()


async def _queue_otp(*, session: AsyncSession, event: OtpRequested, now: datetime) -> Effect:
    p = event.payload
    if p.expires_at <= now:
        SUPPRESSED.labels("expired").inc()
        return Effect()
    await repo.insert_notification(
        session=session,
        id=uuid.uuid4(),
        idempotency_key=f"otp:{event.id}",
        kind="otp",
        priority=PRIORITY_OTP,
        recipient_id=p.user_id,
        channel="sms",
        destination=p.phone,
        body_text=render_otp_sms(code=p.code, expires_at=p.expires_at, now=now),
        expires_at=p.expires_at,
        first_message_at=event.occurred_at,
        status="queued",
        created_at=now,
    )
    return Effect(wake_dispatcher=True)


async def _queue_account_email(
    *, session: AsyncSession, event: EmailVerificationRequested | PasswordResetRequested, now: datetime
) -> Effect:
    p = event.payload
    kind = "email_verification" if isinstance(event, EmailVerificationRequested) else "password_reset"
    if p.expires_at <= now:
        SUPPRESSED.labels("expired").inc()
        return Effect()
    rendered = render_account_email(kind=kind, link=p.link, expires_at=p.expires_at)
    await repo.insert_notification(
        session=session,
        id=uuid.uuid4(),
        idempotency_key=f"{kind}:{event.id}",
        kind=kind,
        priority=PRIORITY_ACCOUNT,
        recipient_id=p.user_id,
        channel="email",
        destination=p.email,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        expires_at=p.expires_at,
        first_message_at=event.occurred_at,
        status="queued",
        created_at=now,
    )
    return Effect(wake_dispatcher=True)
