"""Password rules applied to requests, and storing a new password (which ends every session)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters import repository as repo
from services.auth.domain.passwords import PasswordPolicyError, check_password_policy
from services.auth.service_layer.context import AuthContext
from services.auth.service_layer.errors import InvalidInput
from shared.logging import get_logger

log = get_logger(__name__)


def check_password(ctx: AuthContext, password: str, *, username: str, field: str = "password") -> None:
    try:
        check_password_policy(password, username=username, min_length=ctx.settings.password_min_length)
    except PasswordPolicyError as exc:
        raise InvalidInput(f"{field} {exc}", field=field) from exc


async def set_password(
    ctx: AuthContext,
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    password_hash: str,
    ip: str | None,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Store a new hash and end every session of the user (a password change or a reset)."""
    values = {"password_hash": password_hash, "password_changed_at": func.now(), **(extra or {})}
    await repo.update_user(session, user_id, values)
    sessions = await repo.revoke_all_families(session, user_id, reason)
    await repo.add_audit(
        session, action=reason, user_id=user_id, ip=ip, detail={"sessions_revoked": sessions}
    )
    log.info(reason, user_id=str(user_id), sessions_revoked=sessions)
