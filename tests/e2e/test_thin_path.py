"""One message through all four services, through the public HTTP and WebSocket APIs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from shared.db import asyncpg_dsn
from tests.e2e.conftest import ADMIN_PASSWORD, Stack
from tests.support.smtp import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
ORIGIN = "http://localhost:8000"


async def open_socket(stack: Stack, token: str) -> ClientConnection:
    ws = await connect(
        stack.ws,
        additional_headers={"Authorization": f"Bearer {token}"},
        origin=ORIGIN,  # type: ignore[arg-type]
        compression=None,
    )
    hello = orjson.loads(await ws.recv())
    assert hello["type"] == "hello"
    await ws.send(orjson.dumps({"type": "resume", "conversations": {}}).decode())
    return ws


async def next_frame(ws: ClientConnection, frame_type: str, timeout: float = 10.0) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if frame["type"] == frame_type:
                return frame

    return await asyncio.wait_for(wait(), timeout)


async def wait_for_mail(smtp: SmtpServer, to: str, conversation_id: str, timeout: float = 30) -> list[Any]:
    """Mail to ``to`` about one conversation (its link names it), once the first has arrived."""

    def about() -> list[Any]:
        return [m for m in smtp.sink.to(to) if conversation_id in m.text()]

    for _ in range(int(timeout / 0.05)):
        if about():
            await asyncio.sleep(0.5)  # a second email, if one were wrongly sent, would show now
            return about()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no email about {conversation_id} reached {to}")


async def open_consultation(stack: Stack, client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Open a consultation; retries until auth's user.registered for the admin reached the store."""
    for _ in range(100):
        response = await client.post(
            f"{stack.gateway}/api/conversations",
            json={"subject": "Billing question"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        conversation: dict[str, Any] = response.json()["conversation"]
        if conversation["admin_id"] is not None:
            return conversation
        await asyncio.sleep(0.1)
    raise AssertionError("no administrator was ever assigned")


async def test_message_reaches_the_online_admin_and_an_email_reaches_the_offline_one(
    stack: Stack, smtp: SmtpServer, stack_database_url: str
) -> None:
    async with httpx.AsyncClient(headers={"Origin": ORIGIN}, timeout=10) as client:
        username = f"user{uuid.uuid4().hex[:8]}"
        registered = await stack.register(client, username)
        user_token = str(registered["access_token"])
        admin_token = await stack.login(client, stack.admin_username, ADMIN_PASSWORD)
        conversation = await open_consultation(stack, client, user_token)
        conversation_id = conversation["conversation_id"]

        # Online: the administrator's socket receives the message; the sender gets a durable ack.
        admin_ws = await open_socket(stack, admin_token)
        user_ws = await open_socket(stack, user_token)
        await next_frame(admin_ws, "resumed")
        await next_frame(user_ws, "resumed")
        client_id = uuid.uuid4().hex
        send = {"type": "message.send", "conversation_id": conversation_id, "client_id": client_id}
        await user_ws.send(orjson.dumps({**send, "body": "Hello, is anyone there?"}).decode())
        ack = await next_frame(user_ws, "ack")
        assert ack["seq"] == 1 and ack["duplicate"] is False
        received = await next_frame(admin_ws, "message.new")
        assert received["body"] == "Hello, is anyone there?"
        assert received["message_id"] == ack["message_id"]

        # The ack means PostgreSQL has it; the same client_id again stores nothing new.
        await user_ws.send(orjson.dumps({**send, "body": "Hello, is anyone there?"}).decode())
        again = await next_frame(user_ws, "ack")
        assert again["duplicate"] is True and again["message_id"] == ack["message_id"]
        conn = await asyncpg.connect(asyncpg_dsn(stack_database_url))
        try:
            rows = await conn.fetch(
                "SELECT id, seq, body FROM store.messages WHERE conversation_id = $1",
                uuid.UUID(conversation_id),
            )
        finally:
            await conn.close()
        assert [(str(r["id"]), r["seq"], r["body"]) for r in rows] == [
            (ack["message_id"], 1, "Hello, is anyone there?")
        ]

        # Offline: the administrator disconnects, the user writes, the notifier emails the admin.
        await admin_ws.close()
        await user_ws.send(
            orjson.dumps(
                {**send, "client_id": uuid.uuid4().hex, "body": "Please call me back tomorrow."}
            ).decode()
        )
        assert (await next_frame(user_ws, "ack"))["seq"] == 2
        mails = await wait_for_mail(smtp, stack.admin_email, conversation_id)
        assert len(mails) == 1
        assert "Please call me back tomorrow." in mails[0].text()
        await user_ws.close()

        # The support view, through the gateway, shows the email as sent; users may not see it.
        async def sent_emails() -> list[str]:
            support = await client.get(
                f"{stack.gateway}/api/admin/notifications",
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert support.status_code == 200, support.text
            return [
                n["channel"]
                for n in support.json()["notifications"]
                if n["conversation_id"] == conversation_id and n["status"] == "sent"
            ]

        for _ in range(100):  # the record is committed just after the SMTP server accepted
            if await sent_emails():
                break
            await asyncio.sleep(0.1)
        assert await sent_emails() == ["email"]
        denied = await client.get(
            f"{stack.gateway}/api/admin/notifications",
            headers={"Authorization": f"Bearer {user_token}"},
        )
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
