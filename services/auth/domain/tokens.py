"""Token rules: access-token claims, opaque refresh tokens, single-use link tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

ACCESS_TOKEN_TYPE = "access"
REFRESH_TOKEN_BYTES = 32
MAX_OPAQUE_TOKEN_LENGTH = 128


def new_opaque_token() -> str:
    """A URL-safe random token (256 bits) for refresh tokens and email links."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def hash_opaque_token(token: str) -> bytes:
    """SHA-256 of a high-entropy token: enough to make a leaked table useless."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def plausible_opaque_token(token: str | None) -> bool:
    """Cheap shape check before touching the database."""
    return bool(token) and len(token or "") <= MAX_OPAQUE_TOKEN_LENGTH


def access_claims(
    *,
    user_id: uuid.UUID,
    role: Literal["USER", "ADMIN"],
    session_id: uuid.UUID,
    issuer: str,
    audience: str,
    now: datetime,
    ttl: timedelta,
) -> dict[str, Any]:
    """Claims of an access token; ``sid`` names the refresh family so logout can find it."""
    issued = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(user_id),
        "role": role,
        "typ": ACCESS_TOKEN_TYPE,
        "iat": issued,
        "exp": issued + int(ttl.total_seconds()),
        "jti": uuid.uuid4().hex,
        "sid": str(session_id),
    }


RefreshVerdict = Literal["ok", "unknown", "expired", "revoked", "reused"]


@dataclass(frozen=True)
class RefreshTokenState:
    """What the database knows about a presented refresh token."""

    expires_at: datetime
    rotated_at: datetime | None
    family_revoked_at: datetime | None


def judge_refresh(state: RefreshTokenState | None, now: datetime) -> RefreshVerdict:
    """Decide a refresh: an already-rotated token means theft, so its family must die."""
    if state is None:
        return "unknown"
    if state.family_revoked_at is not None:
        return "revoked"
    if state.rotated_at is not None:
        return "reused"
    if state.expires_at <= now:
        return "expired"
    return "ok"


def csrf_token_for(secret: bytes, session_id: uuid.UUID) -> str:
    """CSRF token bound to a refresh family: a cookie planted by another site cannot match it."""
    return hmac.new(secret, b"csrf:" + session_id.bytes, hashlib.sha256).hexdigest()


def csrf_matches(secret: bytes, session_id: uuid.UUID, presented: str | None) -> bool:
    """Compared as bytes: ``compare_digest`` raises on non-ASCII ``str`` (a header is client input)."""
    if not presented:
        return False
    expected = csrf_token_for(secret, session_id).encode()
    return hmac.compare_digest(expected, presented.encode("utf-8", "surrogateescape"))
