"""Single-use links sent by email: address verification and password reset."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.adapters import repository as repo
from services.auth.adapters.repository import UserRecord
from services.auth.domain.tokens import hash_opaque_token, new_opaque_token, plausible_opaque_token
from services.auth.domain.users import FieldError, normalize_email
from services.auth.service_layer.context import AuthContext, utcnow
from services.auth.service_layer.credentials import check_password, set_password
from services.auth.service_layer.errors import InvalidLink
from services.auth.service_layer.payloads import user_payload
from shared.events import AccountEmailPayload, EmailVerificationRequested, PasswordResetRequested, UserUpdated
from shared.logging import get_logger

log = get_logger(__name__)

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"


def _link(ctx: AuthContext, path: str, token: str) -> str:
    return f"{ctx.settings.frontend_base_url.rstrip('/')}{path}?{urlencode({'token': token})}"


async def queue_email_verification(ctx: AuthContext, session: AsyncSession, user: UserRecord) -> None:
    """Store a link token and ask the notifier (through the outbox) to mail the link."""
    assert user.email is not None
    token = new_opaque_token()
    expires_at = utcnow() + timedelta(seconds=ctx.settings.email_verification_ttl_s)
    await repo.insert_action_token(
        session,
        token_hash=hash_opaque_token(token),
        purpose=VERIFY_EMAIL,
        user_id=user.id,
        email=user.email,
        expires_at=expires_at,
    )
    payload = AccountEmailPayload(
        user_id=user.id, email=user.email, link=_link(ctx, "/verify-email", token), expires_at=expires_at
    )
    await ctx.emit(session, EmailVerificationRequested(payload=payload))


async def resend_email_verification(ctx: AuthContext, *, user: UserRecord) -> bool:
    """Send a fresh link unless there is nothing to verify."""
    if not user.email or user.email_verified:
        return False
    async with ctx.unit_of_work() as session:
        await queue_email_verification(ctx, session, user)
    return True


async def verify_email(ctx: AuthContext, *, token: str) -> UserRecord:
    """Mark the address verified if the link is fresh and the account still uses that address."""
    if not plausible_opaque_token(token):
        raise InvalidLink()
    async with ctx.unit_of_work() as session:
        claimed = await repo.claim_action_token(
            session, token_hash=hash_opaque_token(token), purpose=VERIFY_EMAIL
        )
        user = await repo.get_user(session, claimed.user_id, for_update=True) if claimed else None
        if claimed is None or user is None or (user.email or "").lower() != claimed.email.lower():
            raise InvalidLink()
        if user.email_verified:
            return user
        updated = await repo.update_user(session, user.id, {"email_verified": True})
        await ctx.emit(session, UserUpdated(payload=user_payload(updated)))
        await repo.add_audit(session, action="email_verified", user_id=user.id)
    log.info("email_verified", user_id=str(user.id))
    return updated


async def request_password_reset(ctx: AuthContext, *, email: str) -> None:
    """Mail a reset link if the address belongs to an account; the caller always answers the same."""
    try:
        address = normalize_email(email)
    except FieldError:
        return
    async with ctx.unit_of_work() as session:
        user = await repo.get_user_by_login(session, address)
        if user is None or not user.email:
            log.info("password_reset_unknown_email")
            return
        token = new_opaque_token()
        expires_at = utcnow() + timedelta(seconds=ctx.settings.password_reset_ttl_s)
        await repo.insert_action_token(
            session,
            token_hash=hash_opaque_token(token),
            purpose=RESET_PASSWORD,
            user_id=user.id,
            email=user.email,
            expires_at=expires_at,
        )
        payload = AccountEmailPayload(
            user_id=user.id,
            email=user.email,
            link=_link(ctx, "/reset-password", token),
            expires_at=expires_at,
        )
        await ctx.emit(session, PasswordResetRequested(payload=payload))
        await repo.add_audit(session, action="password_reset_requested", user_id=user.id)
    log.info("password_reset_requested", user_id=str(user.id))


async def reset_password(ctx: AuthContext, *, token: str, new_password: str, ip: str | None) -> None:
    """Use a reset link once: new password, every session ended, and the address counts as verified."""
    if not plausible_opaque_token(token):
        raise InvalidLink()
    token_hash = hash_opaque_token(token)
    async with ctx.sessions() as session:
        peek = await repo.peek_action_token(session, token_hash=token_hash, purpose=RESET_PASSWORD)
        user = await repo.get_user(session, peek.user_id) if peek else None
    if peek is None or user is None:
        raise InvalidLink()
    check_password(ctx, new_password, username=user.username, field="new_password")
    new_hash = await ctx.hasher.hash(new_password)
    async with ctx.unit_of_work() as session:
        claimed = await repo.claim_action_token(session, token_hash=token_hash, purpose=RESET_PASSWORD)
        if claimed is None:
            raise InvalidLink()
        current = await repo.get_user(session, claimed.user_id, for_update=True)
        if current is None:
            raise InvalidLink()
        # The link reached that mailbox: if it is still the account's address, it is now verified.
        proven = (current.email or "").lower() == claimed.email.lower()
        extra = {"email_verified": True} if proven and not current.email_verified else {}
        await set_password(
            ctx,
            session,
            user_id=current.id,
            password_hash=new_hash,
            ip=ip,
            reason="password_reset",
            extra=extra,
        )
        if extra:
            updated = await repo.get_user(session, current.id)
            assert updated is not None
            await ctx.emit(session, UserUpdated(payload=user_payload(updated)))
