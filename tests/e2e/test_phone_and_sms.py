"""A phone verified by the code the notifier texted, then SMS notifications to that phone only."""

from __future__ import annotations

import asyncio
import random
import re
import uuid

import httpx
import orjson
import pytest

from tests.e2e.conftest import ADMIN_PASSWORD, Stack
from tests.e2e.test_thin_path import ORIGIN, next_frame, open_consultation, open_socket
from tests.support.vonage_stub import VonageStub

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def random_phone() -> str:
    """A valid mobile number (Russian plan) that nobody else in this run uses."""
    return f"+79{random.randint(10**8, 10**9 - 1)}"


async def test_otp_sms_verifies_the_phone_and_offline_messages_then_arrive_by_sms(
    stack: Stack, vonage: VonageStub
) -> None:
    phone = random_phone()
    async with httpx.AsyncClient(headers={"Origin": ORIGIN}, timeout=10) as http:
        registered = await stack.register(http, f"sms{uuid.uuid4().hex[:8]}")
        token = str(registered["access_token"])
        auth = {"Authorization": f"Bearer {token}"}

        started = await http.post(f"{stack.auth}/auth/phone/start", json={"phone": phone}, headers=auth)
        assert started.status_code == 202, started.text
        assert phone not in started.text  # only the masked number comes back

        # The code travels auth -> otp.requested -> notifier -> Vonage SDK -> the SMS endpoint.
        sms = await vonage.state.wait_for(1, to=phone, timeout=10)
        code = re.search(r"\b(\d{6})\b", sms[0].text)
        assert code is not None, sms[0].text
        wrong = f"{(int(code.group(1)) + 1) % 1_000_000:06d}"
        refused = await http.post(
            f"{stack.auth}/auth/phone/verify", json={"phone": phone, "code": wrong}, headers=auth
        )
        assert refused.status_code == 400
        verified = await http.post(
            f"{stack.auth}/auth/phone/verify", json={"phone": phone, "code": code.group(1)}, headers=auth
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["phone_verified"] is True

        # SMS on, email off: the notifier learns it from user.updated, never from auth's tables.
        prefs = await http.patch(
            f"{stack.auth}/auth/me",
            json={"preferences": {"sms_enabled": True, "email_enabled": False}},
            headers=auth,
        )
        assert prefs.status_code == 200, prefs.text
        conversation_id = (await open_consultation(stack, http, token))["conversation_id"]
        admin_token = await stack.login(http, stack.admin_username, ADMIN_PASSWORD)

    # The user is offline; the administrator writes twice: one SMS for the conversation.
    admin_ws = await open_socket(stack, admin_token)
    await next_frame(admin_ws, "resumed")
    for n in range(2):
        frame = {
            "type": "message.send",
            "conversation_id": conversation_id,
            "client_id": uuid.uuid4().hex,
            "body": f"Your answer, part {n + 1}",
        }
        await admin_ws.send(orjson.dumps(frame).decode())
        await next_frame(admin_ws, "ack")
    await admin_ws.close()

    texts = await vonage.state.wait_for(2, to=phone, timeout=30)
    await asyncio.sleep(0.5)  # a duplicate, if one were sent, would arrive now
    digests = vonage.state.to(phone)[1:]
    assert len(digests) == 1, [m.text for m in digests]
    assert conversation_id in texts[1].text  # the link to the conversation
