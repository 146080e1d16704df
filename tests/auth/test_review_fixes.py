"""Regressions found in review: client input that used to reach a 500."""

from __future__ import annotations

import uuid

from services.auth.domain.tokens import csrf_matches, csrf_token_for
from tests.auth.conftest import ALLOWED_ORIGIN, STRONG_PASSWORD, RunningApp, unique

SECRET = b"s" * 32


def test_a_non_ascii_csrf_value_is_a_mismatch_not_an_error() -> None:
    sid = uuid.uuid4()
    assert not csrf_matches(SECRET, sid, "é" * 64)
    assert not csrf_matches(SECRET, sid, "\udcff")
    assert csrf_matches(SECRET, sid, csrf_token_for(SECRET, sid))


async def test_a_non_ascii_csrf_header_on_a_cookie_request_answers_403(auth_app: RunningApp) -> None:
    async with auth_app.client(headers={"Origin": ALLOWED_ORIGIN}) as browser:
        response = await browser.post(
            "/auth/register?mode=cookie", json={"username": unique(), "password": STRONG_PASSWORD}
        )
        assert response.status_code == 201, response.text
        # Latin-1 bytes in a header reach the app as a non-ASCII str.
        patched = await browser.patch(
            "/auth/me", json={"display_name": "X"}, headers={"X-CSRF-Token": "é".encode("latin-1")}
        )
        assert patched.status_code == 403, patched.text
        assert patched.json()["code"] == "csrf_failed"
