"""Accounts through the HTTP API: registration, login, profile, email links, password reset, admins."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import text

from services.auth.service_layer.context import AuthContext
from tests.auth.conftest import (
    STRONG_PASSWORD,
    EventTap,
    RunningApp,
    StartApp,
    bearer,
    register,
    run_cli,
    unique,
)

USER_FIELDS = {
    "id",
    "username",
    "role",
    "display_name",
    "email",
    "email_verified",
    "phone_masked",
    "phone_verified",
    "preferences",
    "created_at",
}


def _token_from(link: str) -> str:
    return parse_qs(urlparse(link).query)["token"][0]


async def test_register_answers_the_contract_shape_and_announces_user_registered(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    username = unique("Reg")
    data = await register(
        client,
        username=username,
        email=f"{username}@Example.com",
        phone="+7 912 345 12 34",
        display_name="Ann",
    )
    assert set(data) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}
    assert data["token_type"] == "bearer" and data["expires_in"] == 900
    user = data["user"]
    assert set(user) == USER_FIELDS
    assert user["username"] == username and user["role"] == "USER" and user["display_name"] == "Ann"
    assert user["email"] == f"{username}@example.com" and user["email_verified"] is False
    assert user["phone_masked"] == "+7 *** ***-12-34" and user["phone_verified"] is False
    assert user["preferences"] == {
        "email_enabled": True,
        "sms_enabled": False,
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "timezone": "UTC",
    }
    event = await events.wait_for("user.registered", lambda e: str(e.payload.user_id) == user["id"])
    # Unverified contact details never leave auth.
    assert event.payload.email is None and event.payload.phone is None
    assert event.payload.username == username and event.payload.role == "USER"


async def test_usernames_and_emails_are_unique_ignoring_case(client: httpx.AsyncClient) -> None:
    username = unique("Case")
    await register(client, username=username, email=f"{username}@example.com")
    same_name = await client.post(
        "/auth/register", json={"username": username.upper(), "password": STRONG_PASSWORD}
    )
    assert same_name.status_code == 409
    assert same_name.json()["errors"] == [{"field": "username", "message": "username is already taken"}]
    same_mail = await client.post(
        "/auth/register",
        json={"username": unique(), "password": STRONG_PASSWORD, "email": f"{username.upper()}@EXAMPLE.com"},
    )
    assert same_mail.status_code == 409 and same_mail.json()["errors"][0]["field"] == "email"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": STRONG_PASSWORD}, "username"),
        ({"username": "ok_name1"}, "password"),
        ({"username": "a", "password": STRONG_PASSWORD}, "username"),
        ({"username": "weakpass1", "password": "short"}, "password"),
        ({"username": "weakpass2", "password": "password123"}, "password"),
        ({"username": "samepass12", "password": "SAMEPASS12"}, "password"),
        ({"username": "badmail1", "password": STRONG_PASSWORD, "email": "nope"}, "email"),
        ({"username": "badphone1", "password": STRONG_PASSWORD, "phone": "12"}, "phone"),
        ({"username": "extra1", "password": STRONG_PASSWORD, "role": "ADMIN"}, "role"),
        ({"username": 5, "password": STRONG_PASSWORD}, "username"),
    ],
)
async def test_bad_registration_input_is_a_problem_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_login_works_by_username_or_email_in_any_case(client: httpx.AsyncClient) -> None:
    username = unique("Login")
    await register(client, username=username, email=f"{username}@example.com")
    for login in (username, username.lower(), f"{username.upper()}@EXAMPLE.COM"):
        response = await client.post("/auth/login", json={"login": login, "password": STRONG_PASSWORD})
        assert response.status_code == 200, (login, response.text)
        assert response.json()["user"]["username"] == username


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    client: httpx.AsyncClient, auth_app: RunningApp
) -> None:
    username = unique()
    await register(client, username=username)
    wrong = await client.post("/auth/login", json={"login": username, "password": "not the password!"})
    unknown = await client.post(
        "/auth/login", json={"login": unique("ghost"), "password": "not the password!"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    ctx: AuthContext = auth_app.app.state.auth
    async with ctx.engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    text(
                        "SELECT action FROM auth.audit_log WHERE user_id = "
                        "(SELECT id FROM auth.users WHERE username = :u) ORDER BY id"
                    ),
                    {"u": username},
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["user_registered", "login_failed"]


async def test_login_rehashes_a_password_hashed_with_old_parameters(
    start_app: StartApp, auth_app: RunningApp
) -> None:
    username = unique()
    async with auth_app.client() as client:
        await register(client, username=username)
    ctx: AuthContext = auth_app.app.state.auth

    async def stored_hash() -> str:
        async with ctx.engine.connect() as conn:
            return str(
                (
                    await conn.execute(
                        text("SELECT password_hash FROM auth.users WHERE username = :u"), {"u": username}
                    )
                ).scalar_one()
            )

    before = await stored_hash()
    async with start_app(argon2_time_cost=2, argon2_memory_kib=2048) as stronger, stronger.client() as client:
        response = await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
        assert response.status_code == 200
    after = await stored_hash()
    assert before != after and "m=2048,t=2" in after


async def test_profile_update_changes_name_and_preferences_and_announces_it(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    data = await register(client)
    token, user_id = data["access_token"], data["user"]["id"]
    response = await client.patch(
        "/auth/me",
        json={
            "display_name": "  Dr.  Ann  ",
            "preferences": {
                "sms_enabled": True,
                "quiet_hours_start": "22:00",
                "quiet_hours_end": "07:00",
                "timezone": "Europe/Berlin",
            },
        },
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["display_name"] == "Dr. Ann"
    assert body["preferences"]["sms_enabled"] is True and body["preferences"]["email_enabled"] is True
    assert body["preferences"]["timezone"] == "Europe/Berlin"
    event = await events.wait_for("user.updated", lambda e: str(e.payload.user_id) == user_id)
    assert event.payload.display_name == "Dr. Ann" and event.payload.preferences.quiet_hours_end == "07:00"

    cleared = await client.patch(
        "/auth/me",
        json={"preferences": {"quiet_hours_start": None, "quiet_hours_end": None}},
        headers=bearer(token),
    )
    assert cleared.json()["preferences"]["quiet_hours_start"] is None
    assert (await client.get("/auth/me", headers=bearer(token))).json()["display_name"] == "Dr. Ann"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"preferences": {"timezone": "Nowhere/City"}}, "preferences.timezone"),
        (
            {"preferences": {"quiet_hours_start": "7pm", "quiet_hours_end": "07:00"}},
            "preferences.quiet_hours_start",
        ),
        ({"preferences": {"email_enabled": "maybe"}}, "preferences.email_enabled"),
        ({"email": "not-an-email"}, "email"),
        ({"display_name": "x" * 80}, "display_name"),
        ({"role": "ADMIN"}, "role"),
    ],
)
async def test_bad_profile_updates_are_problems_naming_the_field(
    client: httpx.AsyncClient, patch: dict[str, Any], field: str
) -> None:
    data = await register(client)
    response = await client.patch("/auth/me", json=patch, headers=bearer(data["access_token"]))
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_email_verification_link_marks_the_address_verified(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    username = unique()
    data = await register(client, username=username, email=f"{username}@example.com")
    user_id = data["user"]["id"]
    request = await events.wait_for(
        "email.verification_requested", lambda e: str(e.payload.user_id) == user_id
    )
    assert request.payload.email == f"{username}@example.com"
    assert request.payload.link.startswith("https://app.example.test/verify-email?token=")

    verified = await client.post("/auth/email/verify", json={"token": _token_from(request.payload.link)})
    assert verified.status_code == 200 and verified.json()["email_verified"] is True
    event = await events.wait_for(
        "user.updated", lambda e: str(e.payload.user_id) == user_id and e.payload.email is not None
    )
    assert event.payload.email == f"{username}@example.com"

    again = await client.post("/auth/email/verify", json={"token": _token_from(request.payload.link)})
    assert again.status_code == 400 and again.json()["code"] == "invalid_link"


async def test_changing_the_email_needs_a_new_verification(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    username = unique()
    data = await register(client, username=username, email=f"{username}@example.com")
    token, user_id = data["access_token"], data["user"]["id"]
    first = await events.wait_for("email.verification_requested", lambda e: str(e.payload.user_id) == user_id)
    changed = await client.patch(
        "/auth/me", json={"email": f"{username}@new.example.com"}, headers=bearer(token)
    )
    assert changed.status_code == 200 and changed.json()["email_verified"] is False
    second = await events.wait_for(
        "email.verification_requested",
        lambda e: str(e.payload.user_id) == user_id and e.payload.email.endswith("new.example.com"),
    )
    # The old link is for the old address: it no longer verifies anything.
    assert (
        await client.post("/auth/email/verify", json={"token": _token_from(first.payload.link)})
    ).status_code == 400
    assert (
        await client.post("/auth/email/verify", json={"token": _token_from(second.payload.link)})
    ).status_code == 200


async def test_password_reset_by_single_use_link_ends_every_session(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    username = unique()
    email = f"{username}@example.com"
    data = await register(client, username=username, email=email)
    user_id = data["user"]["id"]

    unknown = await client.post("/auth/password/forgot", json={"email": f"nobody-{username}@example.com"})
    known = await client.post("/auth/password/forgot", json={"email": email.upper()})
    assert unknown.status_code == known.status_code == 202 and unknown.json() == known.json()

    request = await events.wait_for("password.reset_requested", lambda e: str(e.payload.user_id) == user_id)
    assert request.payload.email == email and request.payload.link.startswith(
        "https://app.example.test/reset-password?"
    )
    token = _token_from(request.payload.link)

    weak = await client.post("/auth/password/reset", json={"token": token, "new_password": "password123"})
    assert weak.status_code == 422
    reset = await client.post(
        "/auth/password/reset", json={"token": token, "new_password": "reset to a new phrase"}
    )
    assert reset.status_code == 204
    assert (
        await client.post("/auth/refresh", json={"refresh_token": data["refresh_token"]})
    ).status_code == 401
    reused = await client.post(
        "/auth/password/reset", json={"token": token, "new_password": "another new phrase"}
    )
    assert reused.status_code == 400
    login = await client.post("/auth/login", json={"login": username, "password": "reset to a new phrase"})
    assert login.status_code == 200
    assert login.json()["user"]["email_verified"] is True  # the link proved the mailbox


async def test_users_listing_is_for_admins_only_paginated_and_searchable(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    tag = unique("srch")
    for i in range(3):
        await register(client, username=f"{tag}_{i}", display_name=f"Searchable {i}")
    user = await register(client)
    assert (await client.get("/users", headers=bearer(user["access_token"]))).status_code == 403
    assert (await client.get("/users")).status_code == 401

    page = await client.get("/users", params={"q": tag, "limit": 2}, headers=bearer(admin_token))
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 3 and body["limit"] == 2 and body["offset"] == 0
    assert [u["username"] for u in body["items"]] == [f"{tag}_0", f"{tag}_1"]
    rest = (await client.get("/users", params={"q": tag, "offset": 2}, headers=bearer(admin_token))).json()
    assert [u["username"] for u in rest["items"]] == [f"{tag}_2"]
    wildcard = (await client.get("/users", params={"q": "%"}, headers=bearer(admin_token))).json()
    assert wildcard["total"] == 0
    bad = await client.get("/users", params={"limit": 0}, headers=bearer(admin_token))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.limit"


async def test_only_an_admin_creates_admins_and_role_changes_are_audited(
    client: httpx.AsyncClient, admin_token: str, auth_app: RunningApp, events: EventTap
) -> None:
    user = await register(client)
    body = {"username": unique("adm"), "password": STRONG_PASSWORD, "role": "ADMIN"}
    assert (await client.post("/users", json=body, headers=bearer(user["access_token"]))).status_code == 403
    created = await client.post("/users", json=body, headers=bearer(admin_token))
    assert created.status_code == 201 and created.json()["role"] == "ADMIN"
    login = await client.post("/auth/login", json={"login": body["username"], "password": STRONG_PASSWORD})
    assert login.status_code == 200
    claims_role = login.json()["user"]["role"]
    assert claims_role == "ADMIN"

    promoted = await client.patch(
        f"/users/{user['user']['id']}/role", json={"role": "ADMIN"}, headers=bearer(admin_token)
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "ADMIN"
    event = await events.wait_for(
        "user.updated", lambda e: str(e.payload.user_id) == user["user"]["id"] and e.payload.role == "ADMIN"
    )
    assert event.payload.role == "ADMIN"
    # The old session carried the old role: it is over.
    assert (await client.get("/auth/me", headers=bearer(user["access_token"]))).status_code == 401
    ctx: AuthContext = auth_app.app.state.auth
    async with ctx.engine.connect() as conn:
        detail = (
            await conn.execute(
                text("SELECT detail FROM auth.audit_log WHERE action = 'role_changed' AND user_id = :u"),
                {"u": user["user"]["id"]},
            )
        ).scalar_one()
    assert detail == {"from": "USER", "to": "ADMIN"}
    missing = await client.patch(
        "/users/00000000-0000-0000-0000-000000000000/role", json={"role": "USER"}, headers=bearer(admin_token)
    )
    assert missing.status_code == 404


async def test_ensure_admin_cli_is_idempotent_prints_a_generated_password_once_and_announces_the_admin(
    cli_env: dict[str, str], client: httpx.AsyncClient, events: EventTap
) -> None:
    username = unique("boot")
    email = f"{username}@example.com"
    first = await asyncio.to_thread(
        run_cli, cli_env, "ensure-admin", "--username", username, "--email", email
    )
    assert first.returncode == 0, first.stderr
    assert "password:" in first.stdout
    password = first.stdout.split("password:")[1].split()[0]
    second = await asyncio.to_thread(run_cli, cli_env, "ensure-admin", "--username", username)
    assert second.returncode == 0 and "already exists" in second.stdout and "password" not in second.stdout

    login = await client.post("/auth/login", json={"login": email, "password": password})
    assert login.status_code == 200
    user = login.json()["user"]
    assert user["role"] == "ADMIN" and user["email_verified"] is True
    # Written to the outbox by the CLI, published by the running auth process's relay.
    event = await events.wait_for("user.registered", lambda e: e.payload.username == username)
    assert event.payload.role == "ADMIN" and event.payload.email == email


async def test_ensure_admin_cli_refuses_a_weak_password(cli_env: dict[str, str]) -> None:
    result = await asyncio.to_thread(
        run_cli, cli_env, "ensure-admin", "--username", unique("weak"), "--password", "password123"
    )
    assert result.returncode == 2 and "password" in result.stderr
