"""SQL for phone one-time codes and resend cooldowns."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters.tables import phone_verifications
from services.auth.domain.otp import OtpState


async def insert_code(
    session: AsyncSession, *, user_id: uuid.UUID, phone: str, code_hash: bytes, expires_at: datetime
) -> None:
    """A new code replaces the older ones for this user and phone."""
    await session.execute(
        update(phone_verifications)
        .where(
            phone_verifications.c.user_id == user_id,
            phone_verifications.c.phone == phone,
            phone_verifications.c.consumed_at.is_(None),
        )
        .values(consumed_at=func.now())
    )
    await session.execute(
        insert(phone_verifications).values(
            id=uuid.uuid4(), user_id=user_id, phone=phone, code_hash=code_hash, expires_at=expires_at
        )
    )


async def count_attempt(
    session: AsyncSession, *, user_id: uuid.UUID, phone: str, max_attempts: int
) -> tuple[uuid.UUID, OtpState] | None:
    """Count one attempt on the live code, atomically; ``None`` when no code may be tried any more."""
    latest = (
        select(phone_verifications.c.id)
        .where(
            phone_verifications.c.user_id == user_id,
            phone_verifications.c.phone == phone,
            phone_verifications.c.consumed_at.is_(None),
            phone_verifications.c.expires_at > func.now(),
        )
        .order_by(phone_verifications.c.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            update(phone_verifications)
            .where(phone_verifications.c.id == latest, phone_verifications.c.attempts < max_attempts)
            .values(attempts=phone_verifications.c.attempts + 1)
            .returning(
                phone_verifications.c.id,
                phone_verifications.c.code_hash,
                phone_verifications.c.expires_at,
                phone_verifications.c.attempts,
                phone_verifications.c.consumed_at,
            )
        )
    ).first()
    if row is None:
        return None
    return row.id, OtpState(
        code_hash=bytes(row.code_hash),
        expires_at=row.expires_at,
        attempts=row.attempts,
        consumed=row.consumed_at is not None,
    )


async def consume_code(session: AsyncSession, code_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(phone_verifications)
        .where(phone_verifications.c.id == code_id, phone_verifications.c.consumed_at.is_(None))
        .values(consumed_at=func.now())
        .returning(phone_verifications.c.id)
    )
    return result.first() is not None


_CLAIM_COOLDOWN = text(
    """
    INSERT INTO auth.cooldowns AS c (key, until) VALUES (:key, now() + make_interval(secs => :seconds))
    ON CONFLICT (key) DO UPDATE SET until = EXCLUDED.until WHERE c.until <= now()
    RETURNING until
    """
)
_COOLDOWN_LEFT = text(
    "SELECT GREATEST(0, EXTRACT(EPOCH FROM until - now())) FROM auth.cooldowns WHERE key = :key"
)


async def claim_cooldown(session: AsyncSession, key: str, seconds: int) -> float:
    """Start a cooldown unless one is running: 0 when claimed, else the seconds left (atomic)."""
    if seconds <= 0:
        return 0.0
    if (await session.execute(_CLAIM_COOLDOWN, {"key": key, "seconds": seconds})).first() is not None:
        return 0.0
    left = (await session.execute(_COOLDOWN_LEFT, {"key": key})).scalar()
    return float(left or 1.0)


def expiry(now: datetime, seconds: int) -> datetime:
    return now + timedelta(seconds=seconds)
