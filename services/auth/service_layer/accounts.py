"""Accounts: registration, login, profile, password change, roles and the admin listing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters import repository as repo
from services.auth.adapters.repository import DuplicateField, UserRecord
from services.auth.domain.phones import InvalidPhone, mask_phone, normalize_phone
from services.auth.domain.users import (
    FieldError,
    Role,
    normalize_display_name,
    normalize_email,
    normalize_username,
    validate_preferences,
)
from services.auth.service_layer import links
from services.auth.service_layer.context import AuthContext
from services.auth.service_layer.credentials import check_password, set_password
from services.auth.service_layer.errors import Conflict, InvalidCredentials, InvalidInput, NotFound
from services.auth.service_layer.payloads import user_payload
from shared.events import NotificationPreferences, UserRegistered, UserUpdated
from shared.logging import get_logger

log = get_logger(__name__)


def _field(exc: FieldError | InvalidPhone, field: str | None = None) -> InvalidInput:
    if isinstance(exc, FieldError):
        return InvalidInput(f"{exc.field}: {exc.message}", field=exc.field)
    return InvalidInput(f"{field}: {exc}", field=field)


async def create_user(
    ctx: AuthContext,
    session: AsyncSession,
    *,
    username: str,
    password: str,
    email: str | None = None,
    phone: str | None = None,
    display_name: str | None = None,
    role: Role = "USER",
    email_verified: bool = False,
    actor_id: uuid.UUID | None = None,
    ip: str | None = None,
) -> UserRecord:
    """Validate, hash (off the event loop) and insert; queue user.registered and the email check."""
    try:
        username = normalize_username(username)
        email = normalize_email(email) if email else None
        display_name = normalize_display_name(display_name)
        phone = normalize_phone(phone, ctx.settings.phone_default_region) if phone else None
    except FieldError as exc:
        raise _field(exc) from exc
    except InvalidPhone as exc:
        raise _field(exc, "phone") from exc
    check_password(ctx, password, username=username)
    password_hash = await ctx.hasher.hash(password)
    try:
        user = await repo.insert_user(
            session,
            {
                "id": uuid.uuid4(),
                "username": username,
                "password_hash": password_hash,
                "role": role,
                "display_name": display_name,
                "email": email,
                "email_verified": bool(email) and email_verified,
                "phone": phone,
                "phone_verified": False,
                "preferences": NotificationPreferences().model_dump(),
            },
        )
    except DuplicateField as exc:
        raise Conflict(f"{exc.field} is already taken", field=exc.field) from exc
    await ctx.emit(session, UserRegistered(payload=user_payload(user)))
    if user.email and not user.email_verified:
        await links.queue_email_verification(ctx, session, user)
    await repo.add_audit(
        session,
        action="user_created" if actor_id else "user_registered",
        user_id=user.id,
        actor_id=actor_id,
        ip=ip,
        detail={"role": role},
    )
    log.info("user_registered", user_id=str(user.id), role=role, by=str(actor_id) if actor_id else None)
    return user


async def authenticate_password(ctx: AuthContext, *, login: str, password: str, ip: str | None) -> UserRecord:
    """Check a login; unknown accounts burn a dummy hash so timing and message are the same."""
    async with ctx.sessions() as session:
        user = await repo.get_user_by_login(session, login.strip()) if login.strip() else None
    ok = await ctx.hasher.verify(user.password_hash if user else None, password)
    if not ok or user is None:
        async with ctx.unit_of_work() as session:
            await repo.add_audit(
                session,
                action="login_failed",
                user_id=user.id if user else None,
                ip=ip,
                detail={"known_account": user is not None},
            )
        log.info("login_failed", user_id=str(user.id) if user else None, ip=ip)
        raise InvalidCredentials("invalid login or password")
    async with ctx.unit_of_work() as session:
        if ctx.hasher.needs_rehash(user.password_hash):
            # Parameters changed since this hash was made: upgrade it while we hold the password.
            new_hash = await ctx.hasher.hash(password)
            user = await repo.update_user(session, user.id, {"password_hash": new_hash})
            log.info("password_rehashed", user_id=str(user.id))
        await repo.add_audit(session, action="login_succeeded", user_id=user.id, ip=ip)
    log.info("login_succeeded", user_id=str(user.id), ip=ip)
    return user


@dataclass(frozen=True)
class ProfileChanges:
    """Fields a user may change on themselves; ``None`` means untouched unless listed in ``clear``."""

    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    preferences: dict[str, Any] | None = None
    clear: frozenset[str] = frozenset()


async def update_profile(ctx: AuthContext, *, user_id: uuid.UUID, changes: ProfileChanges) -> UserRecord:
    """Apply changes; a new email needs verification again, a new phone clears ``phone_verified``."""
    async with ctx.unit_of_work() as session:
        user = await repo.get_user(session, user_id, for_update=True)
        if user is None:
            raise NotFound("user not found")
        values: dict[str, Any] = {}
        try:
            if changes.display_name is not None or "display_name" in changes.clear:
                values["display_name"] = normalize_display_name(changes.display_name)
            if changes.email is not None or "email" in changes.clear:
                email = normalize_email(changes.email) if changes.email else None
                if (email or "").lower() != (user.email or "").lower():
                    values.update(email=email, email_verified=False)
            if changes.phone is not None or "phone" in changes.clear:
                phone = (
                    normalize_phone(changes.phone, ctx.settings.phone_default_region)
                    if changes.phone
                    else None
                )
                if phone != user.phone:
                    values.update(phone=phone, phone_verified=False)
            if changes.preferences is not None:
                merged = {**user.preferences.model_dump(), **changes.preferences}
                prefs = validate_preferences(NotificationPreferences.model_validate(merged))
                values["preferences"] = prefs.model_dump()
        except FieldError as exc:
            raise _field(exc) from exc
        except InvalidPhone as exc:
            raise _field(exc, "phone") from exc
        if not values:
            return user
        try:
            updated = await repo.update_user(session, user_id, values)
        except DuplicateField as exc:
            raise Conflict(f"{exc.field} is already taken", field=exc.field) from exc
        if user_payload(updated) != user_payload(user):
            await ctx.emit(session, UserUpdated(payload=user_payload(updated)))
        if "email" in values and updated.email:
            await links.queue_email_verification(ctx, session, updated)
        if "phone" in values:
            detail = {"phone": mask_phone(updated.phone) if updated.phone else None}
            await repo.add_audit(session, action="phone_changed", user_id=user_id, detail=detail)
    return updated


async def change_password(
    ctx: AuthContext, *, user_id: uuid.UUID, current_password: str, new_password: str, ip: str | None
) -> UserRecord:
    """Check the current password, store the new one and end every session of the user."""
    async with ctx.sessions() as session:
        user = await repo.get_user(session, user_id)
    if user is None or not await ctx.hasher.verify(user.password_hash, current_password):
        raise InvalidCredentials("current password is wrong", field="current_password")
    check_password(ctx, new_password, username=user.username, field="new_password")
    new_hash = await ctx.hasher.hash(new_password)
    async with ctx.unit_of_work() as session:
        await set_password(
            ctx, session, user_id=user_id, password_hash=new_hash, ip=ip, reason="password_changed"
        )
        updated = await repo.get_user(session, user_id)
    assert updated is not None
    return updated


async def set_role(
    ctx: AuthContext, *, actor_id: uuid.UUID, user_id: uuid.UUID, role: Role, ip: str | None
) -> UserRecord:
    """An admin changes a role; the change is audited and announced, and the user's sessions end."""
    async with ctx.unit_of_work() as session:
        user = await repo.get_user(session, user_id, for_update=True)
        if user is None:
            raise NotFound("user not found")
        if user.role == role:
            return user
        updated = await repo.update_user(session, user_id, {"role": role})
        # Access tokens carry the role: old sessions must not keep the old one past their expiry.
        await repo.revoke_all_families(session, user_id, "role_changed")
        await ctx.emit(session, UserUpdated(payload=user_payload(updated)))
        await repo.add_audit(
            session,
            action="role_changed",
            user_id=user_id,
            actor_id=actor_id,
            ip=ip,
            detail={"from": user.role, "to": role},
        )
    log.info("role_changed", user_id=str(user_id), actor_id=str(actor_id), role=role)
    return updated


async def list_users(
    ctx: AuthContext, *, query: str | None, role: Role | None, limit: int, offset: int
) -> tuple[list[UserRecord], int]:
    async with ctx.sessions() as session:
        return await repo.list_users(session, query=query, role=role, limit=limit, offset=offset)


async def get_user(ctx: AuthContext, user_id: uuid.UUID) -> UserRecord:
    async with ctx.sessions() as session:
        user = await repo.get_user(session, user_id)
    if user is None:
        raise NotFound("user not found")
    return user
