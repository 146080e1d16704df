"""Access tokens: refused when tampered, expired, for another audience or issuer, unsigned or HS256.

Every case is checked twice: by auth's own protected route and by
``shared.security`` with the keys from auth's JWKS (what the gateway uses).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from jose import jwk

from services.auth.adapters.keys import SigningKey, generate_key_file
from services.auth.service_layer.context import AuthContext
from shared.security import InvalidToken, TokenVerifier, decode_access_token, keys_from_jwks
from tests.auth.conftest import RunningApp, StartApp, bearer, register


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")

    def pad(segment: str) -> str:
        return segment + "=" * (-len(segment) % 4)

    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(
        base64.urlsafe_b64decode(pad(payload))
    )


def _claims(ctx: AuthContext, user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ctx.common.jwt_issuer,
        "aud": ctx.common.jwt_audience,
        "sub": user_id,
        "role": "USER",
        "typ": "access",
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = _segments(token)[1]
    claims["role"] = "ADMIN"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _alg_none(ctx: AuthContext, user_id: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": ctx.keys.active.kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(ctx, user_id)).encode())}."


def _hs256_with_public_key(ctx: AuthContext, user_id: str) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the server's public key."""
    public_pem = jwk.construct(ctx.keys.active.public_jwk, "ES256").public_key().to_pem()
    header = {"alg": "HS256", "typ": "JWT", "kid": ctx.keys.active.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(ctx, user_id)).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _other_key_same_kid(ctx: AuthContext, user_id: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jose import jwt

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return str(
        jwt.encode(_claims(ctx, user_id), pem, algorithm="ES256", headers={"kid": ctx.keys.active.kid})
    )


BAD_TOKENS: dict[str, Callable[[AuthContext, str, str], str]] = {
    "tampered": lambda ctx, uid, good: _tampered(good),
    "expired": lambda ctx, uid, good: ctx.keys.sign(
        _claims(ctx, uid, iat=int(time.time()) - 3600, exp=int(time.time()) - 60)
    ),
    "wrong_aud": lambda ctx, uid, good: ctx.keys.sign(_claims(ctx, uid, aud="someone-else")),
    "wrong_iss": lambda ctx, uid, good: ctx.keys.sign(_claims(ctx, uid, iss="https://evil.example")),
    "alg_none": lambda ctx, uid, good: _alg_none(ctx, uid),
    "hs256_signed_with_public_key": lambda ctx, uid, good: _hs256_with_public_key(ctx, uid),
    "signed_by_another_key": lambda ctx, uid, good: _other_key_same_kid(ctx, uid),
    "no_exp": lambda ctx, uid, good: ctx.keys.sign(_claims(ctx, uid, exp=None)),
    "refresh_type": lambda ctx, uid, good: ctx.keys.sign(_claims(ctx, uid, typ="refresh")),
    "unknown_role": lambda ctx, uid, good: ctx.keys.sign(_claims(ctx, uid, role="ROOT")),
    "truncated": lambda ctx, uid, good: good[:-10],
    "garbage": lambda ctx, uid, good: "not.a.jwt",
    "oversized": lambda ctx, uid, good: good + "A" * 5000,
}


@pytest.fixture
async def account(client: httpx.AsyncClient) -> dict[str, Any]:
    return await register(client)


async def test_jwks_publishes_es256_public_keys_with_kid(
    client: httpx.AsyncClient, auth_app: RunningApp
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and all(
        k["alg"] == "ES256" and k["use"] == "sig" and k["kty"] == "EC" and k["kid"] for k in keys
    )
    assert all("d" not in k for k in keys)
    ctx: AuthContext = auth_app.app.state.auth
    assert keys[0]["kid"] == ctx.keys.active.kid


async def test_issued_access_token_has_the_contract_claims_and_verifies_with_shared_security(
    client: httpx.AsyncClient, account: dict[str, Any], auth_app: RunningApp
) -> None:
    token = account["access_token"]
    header, claims = _segments(token)
    ctx: AuthContext = auth_app.app.state.auth
    assert header["alg"] == "ES256" and header["kid"] == ctx.keys.active.kid
    assert claims["iss"] == ctx.common.jwt_issuer and claims["aud"] == ctx.common.jwt_audience
    assert claims["sub"] == account["user"]["id"] and claims["role"] == "USER" and claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert account["expires_in"] == 900

    jwks = (await client.get("/.well-known/jwks.json")).json()
    principal = decode_access_token(
        token, keys_from_jwks(jwks), issuer=ctx.common.jwt_issuer, audience=ctx.common.jwt_audience
    )
    assert str(principal.user_id) == account["user"]["id"]
    verifier = TokenVerifier("http://unused", issuer=ctx.common.jwt_issuer, audience=ctx.common.jwt_audience)
    verifier.set_jwks(jwks)
    assert (await verifier.verify(token)).role == "USER"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_access_tokens_are_refused_by_auth_and_by_shared_security(
    case: str, client: httpx.AsyncClient, account: dict[str, Any], auth_app: RunningApp
) -> None:
    ctx: AuthContext = auth_app.app.state.auth
    bad = BAD_TOKENS[case](ctx, account["user"]["id"], account["access_token"])

    response = await client.get("/auth/me", headers=bearer(bad))
    assert response.status_code == 401, (case, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_authenticated"

    jwks = (await client.get("/.well-known/jwks.json")).json()
    with pytest.raises(InvalidToken):
        decode_access_token(
            bad, keys_from_jwks(jwks), issuer=ctx.common.jwt_issuer, audience=ctx.common.jwt_audience
        )

    # The genuine token still works: the refusal was about the forgery, not the account.
    assert (await client.get("/auth/me", headers=bearer(account["access_token"]))).status_code == 200


async def test_missing_or_malformed_authorization_header_is_a_401_problem(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = await client.get("/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


async def test_rotated_keys_stay_published_and_old_tokens_keep_verifying(
    start_app: StartApp, tmp_path: Path
) -> None:
    old = SigningKey.from_pem(generate_key_file(tmp_path).read_bytes())
    async with start_app(keys_dir=tmp_path, jwt_active_kid=old.kid) as before, before.client() as client:
        data = await register(client)
    new = SigningKey.from_pem(generate_key_file(tmp_path).read_bytes())
    async with start_app(keys_dir=tmp_path, jwt_active_kid=new.kid) as after, after.client() as client:
        kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids[0] == new.kid and old.kid in kids
        # A token signed before the rotation still works; new tokens carry the new kid.
        assert (await client.get("/auth/me", headers=bearer(data["access_token"]))).status_code == 200
        fresh = (await client.post("/auth/refresh", json={"refresh_token": data["refresh_token"]})).json()
        assert _segments(fresh["access_token"])[0]["kid"] == new.kid
