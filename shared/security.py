"""Access-token verification for every service: ES256 only, public keys from auth's JWKS.

python-jose accepts whatever algorithms it is told and a token without
``exp`` forever, so this module pins one asymmetric algorithm, constructs the
key object itself, requires every claim, checks the token type and caps the
token's length before parsing it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from jose import jwk, jwt
from jose.exceptions import JOSEError

ALGORITHM = "ES256"
MAX_TOKEN_LENGTH = 4096
ACCESS_TOKEN_TYPE = "access"


class InvalidToken(Exception):
    """The token is not one we issued, or no longer valid; never says which check failed."""


class KeysUnavailable(InvalidToken):
    """auth's JWKS could not be fetched, so the token cannot be checked now: a 503, not a 401."""


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    role: Literal["USER", "ADMIN"]
    token_id: str
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

    def actor(self) -> dict[str, str]:
        """How a principal travels in RPC requests."""
        return {"user_id": str(self.user_id), "role": self.role}


def decode_access_token(token: str, keys: dict[str, Any], *, issuer: str, audience: str) -> Principal:
    """Verify signature, algorithm, kid, iss, aud, exp, iat, sub, jti and type."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("bad length")
    try:
        header = jwt.get_unverified_header(token)
    except JOSEError as exc:
        raise InvalidToken("bad header") from exc
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("algorithm")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise InvalidToken("unknown kid")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "require_aud": True,
                "require_iss": True,
                "require_jti": True,
                "leeway": 5,
            },
        )
    except JOSEError as exc:
        raise InvalidToken("invalid") from exc
    if claims.get("typ") != ACCESS_TOKEN_TYPE or claims.get("role") not in ("USER", "ADMIN"):
        raise InvalidToken("type")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise InvalidToken("sub") from exc
    return Principal(
        user_id=user_id,
        role=claims["role"],
        token_id=str(claims["jti"]),
        expires_at=int(claims["exp"]),
    )


def keys_from_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    """Public keys by kid; entries for other algorithms or private material are ignored."""
    keys: dict[str, Any] = {}
    for entry in jwks.get("keys", []):
        if entry.get("kty") != "EC" or entry.get("alg", ALGORITHM) != ALGORITHM or "d" in entry:
            continue
        keys[str(entry["kid"])] = jwk.construct(entry, algorithm=ALGORITHM)
    return keys


class TokenVerifier:
    """Caches auth's JWKS; refetches at most every ``min_refresh_s`` when an unknown kid shows up."""

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, min_refresh_s: float = 30.0) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.min_refresh_s = min_refresh_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    def set_jwks(self, jwks: dict[str, Any]) -> None:
        self._keys = keys_from_jwks(jwks)
        self._fetched_at = time.monotonic()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched_at < self.min_refresh_s:
                return
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
                self.set_jwks(response.json())

    async def verify(self, token: str) -> Principal:
        """Raises only ``InvalidToken`` (``KeysUnavailable`` when auth's JWKS cannot be fetched)."""
        if not self._keys:
            await self._refresh_or_fail(force=True)
        try:
            return decode_access_token(token, self._keys, issuer=self.issuer, audience=self.audience)
        except InvalidToken as exc:
            if str(exc) != "unknown kid":
                raise
        await self._refresh_or_fail()
        return decode_access_token(token, self._keys, issuer=self.issuer, audience=self.audience)

    async def _refresh_or_fail(self, *, force: bool = False) -> None:
        # An unreachable or broken auth must not surface as a 500 or a dead socket to the caller.
        try:
            await self.refresh(force=force)
        except (httpx.HTTPError, JOSEError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeysUnavailable(f"jwks unavailable: {type(exc).__name__}") from exc

    def verify_cached(self, token: str) -> Principal:
        """Verify with the keys already loaded (no I/O): for hot paths after the first fetch."""
        return decode_access_token(token, self._keys, issuer=self.issuer, audience=self.audience)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)
