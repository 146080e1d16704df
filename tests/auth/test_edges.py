"""Origin allow-list, shared rate limits (also across two auth processes), OpenAPI and bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import (
    ALLOWED_ORIGIN,
    STRONG_PASSWORD,
    RunningApp,
    StartApp,
    bearer,
    register,
    unique,
)
from tests.support.processes import service

# Windows this long never roll over during a test, so counts are exact.
LONG_WINDOW = str(30 * 24 * 3600)


async def test_a_foreign_origin_gets_a_403_problem(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("post", "/auth/login"),
        ("get", "/.well-known/jwks.json"),
        ("options", "/auth/login"),
    ):
        response = await client.request(
            method.upper(),
            path,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            json={"login": "x", "password": "y"} if method == "post" else None,
        )
        assert response.status_code == 403, (path, response.text)
        assert response.json()["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in response.headers


async def test_an_allowed_origin_gets_cors_headers_with_credentials_and_preflights(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/auth/login",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-csrf-token",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]

    data = await register(client)
    response = await client.get(
        "/auth/me", headers={"Origin": ALLOWED_ORIGIN, **bearer(data["access_token"])}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_login_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(
    start_app: StartApp,
) -> None:
    async with (
        start_app(login_per_ip=3, login_per_ip_window_s=int(LONG_WINDOW)) as app,
        app.client() as client,
    ):
        username = unique()
        await register(client, username=username)
        remaining = []
        for _ in range(3):
            response = await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
            assert response.status_code == 200
            remaining.append(int(response.headers["RateLimit-Remaining"]))
        assert remaining == [2, 1, 0]
        limited = await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) > 0
        assert limited.headers["RateLimit-Limit"] == "3" and limited.headers["RateLimit-Remaining"] == "0"
        assert int(limited.headers["RateLimit-Reset"]) == int(limited.headers["Retry-After"])
        # Refused before any password work: even a wrong password gets 429, not 401.
        wrong = await client.post("/auth/login", json={"login": username, "password": "wrong password!"})
        assert wrong.status_code == 429

        async with app.client() as other_ip:  # the per-IP counter is per IP
            assert (
                await other_ip.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
            ).status_code == 200


async def test_login_rate_limit_per_account_holds_across_ips(start_app: StartApp) -> None:
    async with start_app(login_per_account=2, login_per_account_window_s=int(LONG_WINDOW)) as app:
        username = unique()
        async with app.client() as client:
            await register(client, username=username)
        statuses = []
        for _ in range(3):
            async with app.client() as client:  # a new IP each time
                response = await client.post(
                    "/auth/login", json={"login": username.upper(), "password": "guessing wrong"}
                )
                statuses.append(response.status_code)
        assert statuses == [401, 401, 429]


async def test_register_and_refresh_and_reset_are_rate_limited(start_app: StartApp) -> None:
    async with (
        start_app(
            register_per_ip=1,
            register_per_ip_window_s=int(LONG_WINDOW),
            refresh_per_ip=1,
            refresh_per_ip_window_s=int(LONG_WINDOW),
            password_reset_per_ip=1,
            password_reset_per_ip_window_s=int(LONG_WINDOW),
        ) as app,
        app.client() as client,
    ):
        data = await register(client)
        second = await client.post("/auth/register", json={"username": unique(), "password": STRONG_PASSWORD})
        assert second.status_code == 429
        assert (
            await client.post("/auth/refresh", json={"refresh_token": data["refresh_token"]})
        ).status_code == 200
        assert (await client.post("/auth/refresh", json={"refresh_token": "x" * 43})).status_code == 429
        assert (
            await client.post("/auth/password/forgot", json={"email": "a@example.com"})
        ).status_code == 202
        assert (
            await client.post("/auth/password/forgot", json={"email": "a@example.com"})
        ).status_code == 429


async def test_login_rate_limit_holds_across_two_auth_processes_sharing_the_database(
    common_env: dict[str, str], keys_dir: Path
) -> None:
    env = {
        **common_env,
        "AUTH_KEYS_DIR": str(keys_dir / "two-processes"),  # fresh: both processes race to create the key
        "AUTH_ARGON2_TIME_COST": "1",
        "AUTH_ARGON2_MEMORY_KIB": "1024",
        "AUTH_LOGIN_PER_IP": "4",
        "AUTH_LOGIN_PER_IP_WINDOW_S": LONG_WINDOW,
        "AUTH_LOGIN_PER_ACCOUNT": "100",
        "CHAT_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
    }
    first, second = service("auth", env), service("auth#2", env)
    first.start()
    second.start()
    try:
        await asyncio.gather(first.wait_ready(), second.wait_ready())
        async with httpx.AsyncClient(timeout=10) as client:
            # Both processes publish the same key set, so either one's tokens verify everywhere.
            jwks_a = (await client.get(f"{first.url}/.well-known/jwks.json")).json()
            jwks_b = (await client.get(f"{second.url}/.well-known/jwks.json")).json()
            assert jwks_a == jwks_b

            username = unique()
            registered = await client.post(
                f"{first.url}/auth/register", json={"username": username, "password": STRONG_PASSWORD}
            )
            assert registered.status_code == 201, registered.text
            me = await client.get(f"{second.url}/auth/me", headers=bearer(registered.json()["access_token"]))
            assert me.status_code == 200

            statuses = []
            for i in range(6):
                target = first if i % 2 == 0 else second
                response = await client.post(
                    f"{target.url}/auth/login", json={"login": username, "password": STRONG_PASSWORD}
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert "Retry-After" in response.headers and "RateLimit-Limit" in response.headers
            # Four logins in total across both replicas, not four each.
            assert statuses == [200, 200, 200, 200, 429, 429]
    finally:
        first.stop()
        second.stop()


async def test_openapi_documents_problem_responses_for_every_operation(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
        if path.startswith(("/auth", "/users"))
    ]
    assert len(operations) >= 18
    for path, method, op in operations:
        errors = {code for code in op["responses"] if code.startswith("4")}
        assert errors, (path, method)
        for code in errors:
            assert "application/problem+json" in op["responses"][code]["content"], (path, method, code)


GARBAGE: list[Any] = [None, "", "null", "[]", "{", '{"a":', "\x00\xff", "9" * 5000, '{"login": {"$ne": 1}}']


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/password/forgot"),
        ("POST", "/auth/password/reset"),
        ("POST", "/auth/email/verify"),
        ("PATCH", "/auth/me"),
        ("POST", "/auth/phone/start"),
        ("POST", "/auth/phone/verify"),
        ("POST", "/auth/password"),
        ("POST", "/users"),
        ("PATCH", "/users/not-a-uuid/role"),
    ],
)
async def test_garbage_bodies_get_a_4xx_problem_never_a_500(
    client: httpx.AsyncClient, method: str, path: str, admin_token: str
) -> None:
    for raw in GARBAGE:
        content = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else b""
        response = await client.request(
            method,
            path,
            content=content,
            headers={"Content-Type": "application/json", **bearer(admin_token)},
        )
        assert 400 <= response.status_code < 500, (path, raw, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_expired_rate_limit_windows_are_swept_without_a_cron(auth_app: RunningApp) -> None:
    from sqlalchemy import text

    from services.auth.service_layer.context import AuthContext

    ctx: AuthContext = auth_app.app.state.auth
    key = f"test-sweep:{unique()}"
    async with ctx.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO auth.rate_limits (key, window_start, count, expires_at)"
                " VALUES (:k, 0, 5, now() - interval '1 minute'), (:k, 1, 5, now() + interval '1 hour')"
            ),
            {"k": key},
        )
    await ctx.limiter.sweep()
    async with ctx.engine.connect() as conn:
        left = (
            (await conn.execute(text("SELECT window_start FROM auth.rate_limits WHERE key = :k"), {"k": key}))
            .scalars()
            .all()
        )
    assert left == [1]
