"""Phone verification by SMS one-time code: cooldown, daily caps, attempts, masked answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.auth.adapters import phone_codes
from services.auth.adapters import repository as repo
from services.auth.adapters.repository import UserRecord
from services.auth.domain.otp import hash_code, judge_code, new_code
from services.auth.domain.phones import InvalidPhone, mask_phone, normalize_phone
from services.auth.domain.ratelimit import Decision
from services.auth.service_layer.context import AuthContext, utcnow
from services.auth.service_layer.errors import InvalidCode, InvalidInput, RateLimited
from services.auth.service_layer.payloads import user_payload
from shared.events import OtpRequested, OtpRequestedPayload, UserUpdated
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class CodeSent:
    phone_masked: str
    expires_at: datetime
    resend_after_s: int


def _normalize(ctx: AuthContext, phone: str) -> str:
    try:
        return normalize_phone(phone, ctx.settings.phone_default_region)
    except InvalidPhone as exc:
        raise InvalidInput("phone: not a valid phone number", field="phone") from exc


async def start_verification(ctx: AuthContext, *, user: UserRecord, phone: str, ip: str) -> CodeSent:
    """Send a new code unless the cooldown runs or a daily cap (per phone, per IP) is reached."""
    e164 = _normalize(ctx, phone)
    s = ctx.settings
    cooldown_key = f"otp:{e164}"
    async with ctx.unit_of_work() as session:
        left = await phone_codes.claim_cooldown(session, cooldown_key, s.otp_resend_cooldown_s)
    if left > 0:
        wait = max(1, int(left + 0.999))
        raise RateLimited(
            Decision(allowed=False, limit=1, remaining=0, reset_s=wait),
            detail=f"a new code can be requested in {wait} s",
        )
    # Daily caps count codes actually sent: a refused request does not use them up.
    await ctx.take_quotas((ctx.limits.otp_ip_daily, ip), (ctx.limits.otp_phone_daily, e164))
    code = new_code()
    expires_at = utcnow() + timedelta(seconds=s.otp_ttl_s)
    async with ctx.unit_of_work() as session:
        await phone_codes.insert_code(
            session,
            user_id=user.id,
            phone=e164,
            code_hash=hash_code(ctx.secret, e164, code),
            expires_at=expires_at,
        )
        # The code leaves only in this event, for the notifier to text; it never reaches a log.
        await ctx.emit(
            session,
            OtpRequested(
                payload=OtpRequestedPayload(user_id=user.id, phone=e164, code=code, expires_at=expires_at)
            ),
        )
    log.info("otp_requested", user_id=str(user.id), phone=mask_phone(e164))
    return CodeSent(
        phone_masked=mask_phone(e164), expires_at=expires_at, resend_after_s=s.otp_resend_cooldown_s
    )


async def confirm_verification(
    ctx: AuthContext, *, user_id: uuid.UUID, phone: str, code: str, ip: str
) -> UserRecord:
    """Check a code (counted against its attempts); on success the number becomes the verified phone."""
    e164 = _normalize(ctx, phone)
    await ctx.check_limits((ctx.limits.otp_verify_ip, ip))
    verdict = "invalid"
    async with ctx.unit_of_work() as session:
        counted = await phone_codes.count_attempt(
            session, user_id=user_id, phone=e164, max_attempts=ctx.settings.otp_max_attempts
        )
        if counted is not None:
            code_id, state = counted
            verdict = judge_code(
                state,
                secret=ctx.secret,
                phone=e164,
                code=code,
                now=utcnow(),
                max_attempts=ctx.settings.otp_max_attempts,
            )
    if verdict != "ok":
        log.info("otp_rejected", user_id=str(user_id), phone=mask_phone(e164))
        raise InvalidCode("invalid or expired code")
    async with ctx.unit_of_work() as session:
        if not await phone_codes.consume_code(session, code_id):
            raise InvalidCode("invalid or expired code")
        before = await repo.get_user(session, user_id, for_update=True)
        if before is None:
            raise InvalidCode("invalid or expired code")
        updated = await repo.update_user(session, user_id, {"phone": e164, "phone_verified": True})
        if user_payload(updated) != user_payload(before):
            await ctx.emit(session, UserUpdated(payload=user_payload(updated)))
        await repo.add_audit(
            session, action="phone_verified", user_id=user_id, ip=ip, detail={"phone": mask_phone(e164)}
        )
    log.info("phone_verified", user_id=str(user_id), phone=mask_phone(e164))
    return updated
