"""Phone verification by SMS code, end to end through the API and the broker."""

from __future__ import annotations

import random

import httpx
from structlog.testing import capture_logs

from tests.auth.conftest import STRONG_PASSWORD, EventTap, RunningApp, StartApp, bearer, fresh_ip, register


def random_phone() -> str:
    """A valid Russian mobile number nobody else in this run uses."""
    return f"+79{random.randint(10**8, 10**9 - 1)}"


def pretty(e164: str) -> str:
    """The same number as a human would type it."""
    d = e164[2:]
    return f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}"


async def _start(client: httpx.AsyncClient, token: str, phone: str) -> httpx.Response:
    return await client.post("/auth/phone/start", json={"phone": phone}, headers=bearer(token))


async def _verify(client: httpx.AsyncClient, token: str, phone: str, code: str) -> httpx.Response:
    return await client.post("/auth/phone/verify", json={"phone": phone, "code": code}, headers=bearer(token))


async def test_otp_flow_verifies_the_phone_with_the_code_from_otp_requested(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    account = await register(client)
    token, user_id = account["access_token"], account["user"]["id"]
    phone = random_phone()
    with capture_logs() as logs:
        started = await _start(client, token, pretty(phone))
        assert started.status_code == 202, started.text
        body = started.json()
        assert body == {
            "phone_masked": f"+7 *** ***-{phone[-4:-2]}-{phone[-2:]}",
            "expires_in": 300,
            "resend_after": 60,
        }
        otp = await events.wait_for("otp.requested", lambda e: str(e.payload.user_id) == user_id)
        assert otp.payload.phone == phone and len(otp.payload.code) == 6

        verified = await _verify(client, token, phone, otp.payload.code)
        assert verified.status_code == 200, verified.text
    user = verified.json()
    assert user["phone_verified"] is True and user["phone_masked"].endswith(phone[-2:])
    assert phone not in verified.text

    # Only now may the notifier text this user: user.updated carries the verified phone.
    updated = await events.wait_for("user.updated", lambda e: str(e.payload.user_id) == user_id)
    assert updated.payload.phone == phone

    # Neither the code nor the full number ever reached a log line.
    logged = repr(logs)
    assert otp.payload.code not in logged and phone not in logged

    # The code is single-use.
    assert (await _verify(client, token, phone, otp.payload.code)).status_code == 400


async def test_five_wrong_codes_kill_the_code_even_for_the_right_one_afterwards(
    client: httpx.AsyncClient, events: EventTap
) -> None:
    account = await register(client)
    token, user_id = account["access_token"], account["user"]["id"]
    phone = random_phone()
    assert (await _start(client, token, phone)).status_code == 202
    otp = await events.wait_for("otp.requested", lambda e: str(e.payload.user_id) == user_id)
    wrong = f"{(int(otp.payload.code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        response = await _verify(client, token, phone, wrong)
        assert response.status_code == 400
        assert response.json() == {
            "type": "about:blank",
            "title": "Invalid or expired code",
            "status": 400,
            "code": "invalid_code",
            "detail": "invalid or expired code",
        }
    late = await _verify(client, token, phone, otp.payload.code)
    assert late.status_code == 400 and late.json()["code"] == "invalid_code"
    me = await client.get("/auth/me", headers=bearer(token))
    assert me.json()["phone_verified"] is False


async def test_an_unknown_number_gets_the_same_answer_as_a_wrong_code(client: httpx.AsyncClient) -> None:
    account = await register(client)
    never_sent = await _verify(client, account["access_token"], random_phone(), "123456")
    assert never_sent.status_code == 400 and never_sent.json()["detail"] == "invalid or expired code"


async def test_a_new_code_is_refused_during_the_resend_cooldown(client: httpx.AsyncClient) -> None:
    account = await register(client)
    phone = random_phone()
    assert (await _start(client, account["access_token"], phone)).status_code == 202
    again = await _start(client, account["access_token"], phone)
    assert again.status_code == 429
    assert 55 <= int(again.headers["Retry-After"]) <= 60
    assert again.json()["code"] == "rate_limited"


async def test_daily_caps_per_phone_and_per_ip_hold(start_app: StartApp) -> None:
    async with start_app(otp_resend_cooldown_s=0, otp_daily_per_phone=5, otp_daily_per_ip=8) as app:
        ip = fresh_ip()
        async with app.client(ip=ip) as client:
            account = await register(client)
            token = account["access_token"]
            phone = random_phone()
            for _ in range(5):
                assert (await _start(client, token, phone)).status_code == 202
            capped = await _start(client, token, phone)
            assert capped.status_code == 429 and "Retry-After" in capped.headers

            # The same IP may still text other numbers, up to its own cap (8 here; 20 by default).
            statuses = [(await _start(client, token, random_phone())).status_code for _ in range(4)]
            assert statuses == [202, 202, 202, 429]

        async with app.client() as elsewhere:  # another IP is not affected by this IP's cap
            other = await register(elsewhere)
            assert (await _start(elsewhere, other["access_token"], random_phone())).status_code == 202


async def test_the_newest_code_replaces_older_ones(start_app: StartApp, events: EventTap) -> None:
    async with start_app(otp_resend_cooldown_s=0) as app, app.client() as client:
        account = await register(client)
        token, user_id = account["access_token"], account["user"]["id"]
        phone = random_phone()
        await _start(client, token, phone)
        first = await events.wait_for("otp.requested", lambda e: str(e.payload.user_id) == user_id)
        await _start(client, token, phone)
        second = await events.wait_for(
            "otp.requested", lambda e: str(e.payload.user_id) == user_id and e.id != first.id
        )
        if first.payload.code != second.payload.code:
            assert (await _verify(client, token, phone, first.payload.code)).status_code == 400
        assert (await _verify(client, token, phone, second.payload.code)).status_code == 200


async def test_changing_the_phone_clears_phone_verified(client: httpx.AsyncClient, events: EventTap) -> None:
    account = await register(client)
    token, user_id = account["access_token"], account["user"]["id"]
    phone = random_phone()
    await _start(client, token, phone)
    otp = await events.wait_for("otp.requested", lambda e: str(e.payload.user_id) == user_id)
    assert (await _verify(client, token, phone, otp.payload.code)).json()["phone_verified"] is True
    changed = await client.patch("/auth/me", json={"phone": random_phone()}, headers=bearer(token))
    assert changed.status_code == 200 and changed.json()["phone_verified"] is False
    cleared = await events.wait_for(
        "user.updated", lambda e: str(e.payload.user_id) == user_id and e.payload.phone is None
    )
    assert cleared.payload.phone is None


async def test_invalid_phone_numbers_get_a_problem_naming_the_field(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for bad in ("12345", "+1 555", "call me maybe"):
        response = await _start(client, account["access_token"], bad)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "phone"
    unauthenticated = await client.post("/auth/phone/start", json={"phone": random_phone()})
    assert unauthenticated.status_code == 401


async def test_the_audit_trail_records_security_events_without_secrets_or_full_numbers(
    client: httpx.AsyncClient, events: EventTap, auth_app: RunningApp
) -> None:
    from sqlalchemy import text

    account = await register(client)
    token, user_id = account["access_token"], account["user"]["id"]
    username = account["user"]["username"]
    phone = random_phone()
    await _start(client, token, phone)
    otp = await events.wait_for("otp.requested", lambda e: str(e.payload.user_id) == user_id)
    await _verify(client, token, phone, otp.payload.code)
    await client.post("/auth/login", json={"login": username, "password": "wrong password here"})
    await client.post(
        "/auth/password",
        json={"current_password": STRONG_PASSWORD, "new_password": "an entirely new phrase"},
        headers=bearer(token),
    )
    ctx = auth_app.app.state.auth
    async with ctx.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT action, detail::text FROM auth.audit_log WHERE user_id = :u ORDER BY id"),
                {"u": user_id},
            )
        ).all()
    actions = [r.action for r in rows]
    assert actions == ["user_registered", "phone_verified", "login_failed", "password_changed"]
    trail = " ".join(r.detail for r in rows)
    assert phone not in trail and otp.payload.code not in trail and "***" in trail
