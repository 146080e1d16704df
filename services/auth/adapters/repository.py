"""SQL for users, refresh families and link tokens; every function runs in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters.tables import (
    action_tokens,
    audit_log,
    refresh_families,
    refresh_tokens,
    users,
)
from services.auth.domain.tokens import RefreshTokenState
from services.auth.domain.users import Role
from shared.events import NotificationPreferences


class DuplicateField(Exception):
    """A case-insensitive unique field (``username`` or ``email``) is taken."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    username: str
    password_hash: str
    role: Role
    display_name: str | None
    email: str | None
    email_verified: bool
    phone: str | None
    phone_verified: bool
    preferences: NotificationPreferences
    password_changed_at: datetime
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> UserRecord:
        values = dict(row._mapping)
        values["preferences"] = NotificationPreferences.model_validate(values.get("preferences") or {})
        values.pop("updated_at", None)
        return cls(**values)


def _duplicate_from(exc: IntegrityError) -> DuplicateField | None:
    text = str(exc.orig)
    if "uq_users_username_lower" in text:
        return DuplicateField("username")
    if "uq_users_email_lower" in text:
        return DuplicateField("email")
    return None


async def insert_user(session: AsyncSession, values: dict[str, Any]) -> UserRecord:
    """Insert in a savepoint so a duplicate leaves the outer transaction usable."""
    try:
        async with session.begin_nested():
            row = (await session.execute(insert(users).values(**values).returning(*users.c))).one()
    except IntegrityError as exc:
        duplicate = _duplicate_from(exc)
        if duplicate is not None:
            raise duplicate from exc
        raise
    return UserRecord.from_row(row)


async def get_user(
    session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
) -> UserRecord | None:
    query: Select[Any] = select(users).where(users.c.id == user_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return UserRecord.from_row(row) if row else None


async def get_user_by_login(session: AsyncSession, login: str) -> UserRecord | None:
    """Look up by username, or by email when the login contains ``@``."""
    column = users.c.email if "@" in login else users.c.username
    row = (await session.execute(select(users).where(func.lower(column) == login.lower()))).first()
    return UserRecord.from_row(row) if row else None


async def get_user_by_username(session: AsyncSession, username: str) -> UserRecord | None:
    row = (
        await session.execute(select(users).where(func.lower(users.c.username) == username.lower()))
    ).first()
    return UserRecord.from_row(row) if row else None


async def update_user(session: AsyncSession, user_id: uuid.UUID, values: dict[str, Any]) -> UserRecord:
    """Apply changes (a duplicate email raises ``DuplicateField``) and return the new row."""
    try:
        async with session.begin_nested():
            row = (
                await session.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(**values, updated_at=func.now())
                    .returning(*users.c)
                )
            ).one()
    except IntegrityError as exc:
        duplicate = _duplicate_from(exc)
        if duplicate is not None:
            raise duplicate from exc
        raise
    return UserRecord.from_row(row)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_users(
    session: AsyncSession, *, query: str | None, role: Role | None, limit: int, offset: int
) -> tuple[list[UserRecord], int]:
    """Page of users (oldest first) matching ``query`` in username, display name or email."""
    conditions = []
    if query:
        pattern = f"%{_escape_like(query.lower())}%"
        conditions.append(
            or_(
                func.lower(users.c.username).like(pattern, escape="\\"),
                func.lower(func.coalesce(users.c.display_name, "")).like(pattern, escape="\\"),
                func.lower(func.coalesce(users.c.email, "")).like(pattern, escape="\\"),
            )
        )
    if role:
        conditions.append(users.c.role == role)
    where = and_(True, *conditions)
    total = int((await session.execute(select(func.count()).select_from(users).where(where))).scalar_one())
    rows = (
        await session.execute(
            select(users).where(where).order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
        )
    ).all()
    return [UserRecord.from_row(row) for row in rows], total


# --- refresh families -----------------------------------------------------------


async def create_family(session: AsyncSession, user_id: uuid.UUID) -> uuid.UUID:
    family_id = uuid.uuid4()
    await session.execute(insert(refresh_families).values(id=family_id, user_id=user_id))
    return family_id


async def insert_refresh_token(
    session: AsyncSession,
    *,
    token_hash: bytes,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    await session.execute(
        insert(refresh_tokens).values(
            token_hash=token_hash, family_id=family_id, user_id=user_id, expires_at=expires_at
        )
    )


@dataclass(frozen=True)
class RefreshRow:
    family_id: uuid.UUID
    user_id: uuid.UUID
    state: RefreshTokenState


async def lock_refresh_token(session: AsyncSession, token_hash: bytes) -> RefreshRow | None:
    """The token and its family, locked: concurrent uses of one token are judged one after the other."""
    row = (
        await session.execute(
            select(
                refresh_tokens.c.family_id,
                refresh_tokens.c.user_id,
                refresh_tokens.c.expires_at,
                refresh_tokens.c.rotated_at,
                refresh_families.c.revoked_at,
            )
            .join(refresh_families, refresh_families.c.id == refresh_tokens.c.family_id)
            .where(refresh_tokens.c.token_hash == token_hash)
            .with_for_update(of=[refresh_tokens, refresh_families])
        )
    ).first()
    if row is None:
        return None
    return RefreshRow(
        family_id=row.family_id,
        user_id=row.user_id,
        state=RefreshTokenState(
            expires_at=row.expires_at, rotated_at=row.rotated_at, family_revoked_at=row.revoked_at
        ),
    )


async def mark_rotated(session: AsyncSession, token_hash: bytes) -> None:
    await session.execute(
        update(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).values(rotated_at=func.now())
    )


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, reason: str) -> bool:
    result = await session.execute(
        update(refresh_families)
        .where(refresh_families.c.id == family_id, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
        .returning(refresh_families.c.id)
    )
    return result.first() is not None


async def revoke_all_families(session: AsyncSession, user_id: uuid.UUID, reason: str) -> int:
    result = await session.execute(
        update(refresh_families)
        .where(refresh_families.c.user_id == user_id, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
        .returning(refresh_families.c.id)
    )
    return len(result.all())


async def family_is_live(session: AsyncSession, family_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    row = (
        await session.execute(
            select(refresh_families.c.id).where(
                refresh_families.c.id == family_id,
                refresh_families.c.user_id == user_id,
                refresh_families.c.revoked_at.is_(None),
            )
        )
    ).first()
    return row is not None


# --- single-use link tokens -------------------------------------------------------


async def insert_action_token(
    session: AsyncSession,
    *,
    token_hash: bytes,
    purpose: str,
    user_id: uuid.UUID,
    email: str,
    expires_at: datetime,
) -> None:
    await session.execute(
        insert(action_tokens).values(
            token_hash=token_hash, purpose=purpose, user_id=user_id, email=email, expires_at=expires_at
        )
    )


@dataclass(frozen=True)
class ClaimedAction:
    user_id: uuid.UUID
    email: str


async def claim_action_token(
    session: AsyncSession, *, token_hash: bytes, purpose: str
) -> ClaimedAction | None:
    """Use a link token once: only an unused, unexpired token of this purpose is claimed."""
    row = (
        await session.execute(
            update(action_tokens)
            .where(
                action_tokens.c.token_hash == token_hash,
                action_tokens.c.purpose == purpose,
                action_tokens.c.used_at.is_(None),
                action_tokens.c.expires_at > func.now(),
            )
            .values(used_at=func.now())
            .returning(action_tokens.c.user_id, action_tokens.c.email)
        )
    ).first()
    return ClaimedAction(row.user_id, row.email) if row else None


# --- audit -------------------------------------------------------------------------


async def add_audit(
    session: AsyncSession,
    *,
    action: str,
    user_id: uuid.UUID | None,
    actor_id: uuid.UUID | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(audit_log).values(
            action=action, user_id=user_id, actor_id=actor_id, ip=ip, detail=detail or {}
        )
    )


async def peek_action_token(
    session: AsyncSession, *, token_hash: bytes, purpose: str
) -> ClaimedAction | None:
    """A usable link token without using it (to validate input before the expensive hash)."""
    row = (
        await session.execute(
            select(action_tokens.c.user_id, action_tokens.c.email).where(
                action_tokens.c.token_hash == token_hash,
                action_tokens.c.purpose == purpose,
                action_tokens.c.used_at.is_(None),
                action_tokens.c.expires_at > func.now(),
            )
        )
    ).first()
    return ClaimedAction(row.user_id, row.email) if row else None
