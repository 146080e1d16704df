"""Sessions: access tokens, rotating refresh tokens with reuse detection, logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from jose import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters import repository as repo
from services.auth.adapters.repository import UserRecord
from services.auth.domain.tokens import (
    access_claims,
    csrf_matches,
    hash_opaque_token,
    judge_refresh,
    new_opaque_token,
    plausible_opaque_token,
)
from services.auth.service_layer.context import AuthContext, utcnow
from services.auth.service_layer.errors import CsrfFailed, InvalidRefreshToken, NotAuthenticated
from shared.logging import get_logger
from shared.security import InvalidToken, Principal, decode_access_token

log = get_logger(__name__)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID


def _sign_access(ctx: AuthContext, user: UserRecord, session_id: uuid.UUID) -> str:
    claims = access_claims(
        user_id=user.id,
        role=user.role,
        session_id=session_id,
        issuer=ctx.common.jwt_issuer,
        audience=ctx.common.jwt_audience,
        now=utcnow(),
        ttl=timedelta(seconds=ctx.settings.access_token_ttl_s),
    )
    return ctx.keys.sign(claims)


async def _new_refresh(
    ctx: AuthContext, session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID
) -> str:
    token = new_opaque_token()
    await repo.insert_refresh_token(
        session,
        token_hash=hash_opaque_token(token),
        family_id=family_id,
        user_id=user_id,
        expires_at=utcnow() + timedelta(seconds=ctx.settings.refresh_token_ttl_s),
    )
    return token


async def start_session(ctx: AuthContext, session: AsyncSession, user: UserRecord) -> TokenPair:
    """A new refresh family (one per login) and its first tokens, in the caller's transaction."""
    family_id = await repo.create_family(session, user.id)
    refresh = await _new_refresh(ctx, session, user.id, family_id)
    return TokenPair(
        access_token=_sign_access(ctx, user, family_id),
        refresh_token=refresh,
        expires_in=ctx.settings.access_token_ttl_s,
        session_id=family_id,
    )


async def refresh_session(
    ctx: AuthContext, *, refresh_token: str, ip: str | None, csrf: str | None = None
) -> tuple[UserRecord, TokenPair]:
    """Rotate: the presented token dies, a new one joins its family; reuse kills the family.

    ``csrf`` (cookie mode) must be the CSRF token bound to the token's family, checked before rotating.
    """
    if not plausible_opaque_token(refresh_token):
        raise InvalidRefreshToken()
    token_hash = hash_opaque_token(refresh_token)
    async with ctx.unit_of_work() as session:
        row = await repo.lock_refresh_token(session, token_hash)
        verdict = judge_refresh(row.state if row else None, utcnow())
        if verdict == "reused" and row is not None:
            await repo.revoke_family(session, row.family_id, "reuse")
            await repo.add_audit(
                session,
                action="refresh_reuse_detected",
                user_id=row.user_id,
                ip=ip,
                detail={"family_id": str(row.family_id)},
            )
            log.warning("refresh_reuse_detected", user_id=str(row.user_id), family_id=str(row.family_id))
        if verdict == "ok" and row is not None:
            if csrf is not None and not csrf_matches(ctx.secret, row.family_id, csrf):
                raise CsrfFailed("cookie refresh needs the X-CSRF-Token header")
            user = await repo.get_user(session, row.user_id)
            if user is not None:
                await repo.mark_rotated(session, token_hash)
                refresh = await _new_refresh(ctx, session, user.id, row.family_id)
                pair = TokenPair(
                    access_token=_sign_access(ctx, user, row.family_id),
                    refresh_token=refresh,
                    expires_in=ctx.settings.access_token_ttl_s,
                    session_id=row.family_id,
                )
                return user, pair
    # Reached only for a refused token, after the revocation above has committed.
    raise InvalidRefreshToken()


async def logout(ctx: AuthContext, *, user_id: uuid.UUID, session_id: uuid.UUID | None) -> None:
    if session_id is None:
        return
    async with ctx.unit_of_work() as session:
        await repo.revoke_family(session, session_id, "logout")
    log.info("logout", user_id=str(user_id))


async def logout_by_refresh_token(ctx: AuthContext, *, refresh_token: str) -> None:
    """Logout when only the refresh token is at hand (an expired access token)."""
    if not plausible_opaque_token(refresh_token):
        return
    async with ctx.unit_of_work() as session:
        row = await repo.lock_refresh_token(session, hash_opaque_token(refresh_token))
        if row is not None:
            await repo.revoke_family(session, row.family_id, "logout")


async def logout_everywhere(ctx: AuthContext, *, user_id: uuid.UUID, ip: str | None) -> int:
    async with ctx.unit_of_work() as session:
        count = await repo.revoke_all_families(session, user_id, "logout_all")
        await repo.add_audit(session, action="logout_all", user_id=user_id, ip=ip, detail={"sessions": count})
    log.info("logout_all", user_id=str(user_id), sessions=count)
    return count


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    session_id: uuid.UUID | None
    user: UserRecord


def verify_access_token(ctx: AuthContext, token: str) -> tuple[Principal, uuid.UUID | None]:
    """Check with the same rules every other service uses (shared.security), then read ``sid``."""
    try:
        principal = decode_access_token(
            token, ctx.public_keys, issuer=ctx.common.jwt_issuer, audience=ctx.common.jwt_audience
        )
    except InvalidToken as exc:
        raise NotAuthenticated("invalid or expired access token") from exc
    sid = jwt.get_unverified_claims(token).get("sid")  # signature already verified above
    try:
        return principal, uuid.UUID(str(sid)) if sid else None
    except ValueError as exc:
        raise NotAuthenticated("invalid or expired access token") from exc


async def authenticate(ctx: AuthContext, token: str) -> Authenticated:
    """A valid token whose session is still live and whose user still exists."""
    principal, session_id = verify_access_token(ctx, token)
    async with ctx.sessions() as session:
        user = await repo.get_user(session, principal.user_id)
        live = session_id is None or await repo.family_is_live(session, session_id, principal.user_id)
    if user is None or not live:
        raise NotAuthenticated("session ended")
    return Authenticated(principal=principal, session_id=session_id, user=user)
