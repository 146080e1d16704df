"""Refresh rotation, reuse detection, logout, and the browser cookie mode with its CSRF defence."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx
from sqlalchemy import text

from services.auth.service_layer.context import AuthContext
from tests.auth.conftest import ALLOWED_ORIGIN, STRONG_PASSWORD, RunningApp, bearer, register, unique


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_both_tokens_and_the_new_pair_works(client: httpx.AsyncClient) -> None:
    first = await register(client)
    response = await _refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "bearer" and second["expires_in"] == 900
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await client.get("/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    assert (await _refresh(client, second["refresh_token"])).status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: httpx.AsyncClient, auth_app: RunningApp
) -> None:
    first = await register(client)
    second = (await _refresh(client, first["refresh_token"])).json()
    third = (await _refresh(client, second["refresh_token"])).json()

    # The thief replays the first token: 401, and every descendant of that login dies with it.
    reuse = await _refresh(client, first["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "invalid_refresh_token"
    assert (await _refresh(client, third["refresh_token"])).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(third["access_token"]))).status_code == 401

    ctx: AuthContext = auth_app.app.state.auth
    async with ctx.engine.connect() as conn:
        audited = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM auth.audit_log"
                    " WHERE action = 'refresh_reuse_detected' AND user_id = :u"
                ),
                {"u": first["user"]["id"]},
            )
        ).scalar_one()
        reason = (
            await conn.execute(
                text("SELECT revoked_reason FROM auth.refresh_families WHERE user_id = :u"),
                {"u": first["user"]["id"]},
            )
        ).scalar_one()
    assert audited == 1 and reason == "reuse"


async def test_reuse_in_one_family_leaves_other_logins_alive(client: httpx.AsyncClient) -> None:
    username = unique()
    first = await register(client, username=username)
    other = (await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})).json()
    await _refresh(client, first["refresh_token"])
    assert (await _refresh(client, first["refresh_token"])).status_code == 401
    assert (await _refresh(client, other["refresh_token"])).status_code == 200


async def test_unknown_or_malformed_refresh_tokens_are_refused(client: httpx.AsyncClient) -> None:
    for token in ("x" * 43, "", "y" * 300):
        response = await _refresh(client, token)
        assert response.status_code in (401, 422), response.text
    assert (await client.post("/auth/refresh", json={})).status_code == 401


async def test_logout_revokes_the_current_family_only(client: httpx.AsyncClient) -> None:
    username = unique()
    a = await register(client, username=username)
    b = (await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})).json()
    assert (await client.post("/auth/logout", headers=bearer(a["access_token"]))).status_code == 204
    assert (await _refresh(client, a["refresh_token"])).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(a["access_token"]))).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(b["access_token"]))).status_code == 200
    assert (await _refresh(client, b["refresh_token"])).status_code == 200


async def test_logout_everywhere_revokes_every_family(client: httpx.AsyncClient) -> None:
    username = unique()
    a = await register(client, username=username)
    b = (await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})).json()
    assert (await client.post("/auth/logout-all", headers=bearer(b["access_token"]))).status_code == 204
    for pair in (a, b):
        assert (await _refresh(client, pair["refresh_token"])).status_code == 401
        assert (await client.get("/auth/me", headers=bearer(pair["access_token"]))).status_code == 401


async def test_password_change_revokes_every_family_and_returns_a_fresh_session(
    client: httpx.AsyncClient,
) -> None:
    username = unique()
    a = await register(client, username=username)
    b = (await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})).json()
    wrong = await client.post(
        "/auth/password",
        json={"current_password": "not my password at all", "new_password": "a brand new passphrase"},
        headers=bearer(a["access_token"]),
    )
    assert wrong.status_code == 401
    changed = await client.post(
        "/auth/password",
        json={"current_password": STRONG_PASSWORD, "new_password": "a brand new passphrase"},
        headers=bearer(a["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    for pair in (a, b):
        assert (await _refresh(client, pair["refresh_token"])).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(changed.json()["access_token"]))).status_code == 200
    old = await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
    assert old.status_code == 401
    new = await client.post("/auth/login", json={"login": username, "password": "a brand new passphrase"})
    assert new.status_code == 200


def _cookies(response: httpx.Response) -> dict[str, Any]:
    jar: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            jar[name] = morsel
    return jar


async def test_cookie_mode_sets_httponly_secure_strict_cookies_and_scopes_the_refresh_cookie(
    auth_app: RunningApp,
) -> None:
    async with auth_app.client(headers={"Origin": ALLOWED_ORIGIN}) as browser:
        response = await browser.post(
            "/auth/register?mode=cookie", json={"username": unique(), "password": STRONG_PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["token_type"] == "cookie" and body["csrf_token"]
        assert "access_token" not in body and "refresh_token" not in body
        cookies = _cookies(response)
        access, refresh, csrf = cookies["access_token"], cookies["refresh_token"], cookies["csrf_token"]
        for morsel in (access, refresh):
            assert morsel["httponly"] and morsel["secure"] and morsel["samesite"].lower() == "strict"
        assert access["path"] == "/" and refresh["path"] == "/auth/refresh"
        assert not csrf["httponly"] and csrf.value == body["csrf_token"]

        # httpx's jar now holds the cookies (the base URL is https): the browser sends them itself.
        assert (await browser.get("/auth/me")).status_code == 200

        # Unsafe cookie requests need the CSRF header.
        no_csrf = await browser.patch("/auth/me", json={"display_name": "Cookie Monster"})
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_failed"
        wrong = await browser.patch(
            "/auth/me", json={"display_name": "X"}, headers={"X-CSRF-Token": "0" * 64}
        )
        assert wrong.status_code == 403
        ok = await browser.patch(
            "/auth/me", json={"display_name": "Cookie Monster"}, headers={"X-CSRF-Token": body["csrf_token"]}
        )
        assert ok.status_code == 200 and ok.json()["display_name"] == "Cookie Monster"

        # Refresh from the cookie: needs the CSRF header too, then rotates the cookies.
        assert (await browser.post("/auth/refresh")).status_code == 403
        rotated = await browser.post("/auth/refresh", headers={"X-CSRF-Token": body["csrf_token"]})
        assert rotated.status_code == 200, rotated.text
        assert _cookies(rotated)["refresh_token"].value != refresh.value
        assert rotated.json()["token_type"] == "cookie"

        # Logout clears the cookies and ends the session.
        csrf_token = rotated.json()["csrf_token"]
        out = await browser.post("/auth/logout", headers={"X-CSRF-Token": csrf_token})
        assert out.status_code == 204
        assert all(m["max-age"] == "0" or m.value == "" for m in _cookies(out).values())
        assert (await browser.get("/auth/me")).status_code == 401


async def test_cookie_login_with_a_planted_csrf_cookie_is_refused(auth_app: RunningApp) -> None:
    """The CSRF token is bound to the session: a cookie value set by someone else never matches."""
    async with auth_app.client() as browser:
        username = unique()
        await register(browser, username=username)
        login = await browser.post(
            "/auth/login?mode=cookie", json={"login": username, "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200
        browser.cookies.set("csrf_token", "f" * 64, domain="auth.test")
        response = await browser.post("/auth/logout-all", headers={"X-CSRF-Token": "f" * 64})
        assert response.status_code == 403


async def test_logout_with_only_the_refresh_token_ends_that_session(client: httpx.AsyncClient) -> None:
    data = await register(client)
    response = await client.post("/auth/logout", json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 204
    assert (await _refresh(client, data["refresh_token"])).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(data["access_token"]))).status_code == 401
    assert (await client.post("/auth/logout")).status_code == 401
