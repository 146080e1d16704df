"""Restarting a service, or losing RabbitMQ or PostgreSQL for a while, loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from shared.db import asyncpg_dsn
from tests.e2e.conftest import ADMIN_PASSWORD, Stack
from tests.e2e.test_thin_path import ORIGIN, open_consultation
from tests.support.chat_client import ChatClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
MESSAGES = 24
FAULT_AT = 8


async def outage(stack: Stack, kind: str) -> None:
    if kind == "store":
        await stack.restart("store", kill=True)
    elif kind == "gateway":
        await stack.restart("gateway")
    elif kind == "notifier":
        await stack.restart("notifier", kill=True)
    elif kind == "rabbitmq":
        await stack.rabbitmq.cut()
        await asyncio.sleep(2)
        await stack.rabbitmq.restore()
    elif kind == "postgres":
        await stack.postgres.cut()
        await asyncio.sleep(2)
        await stack.postgres.restore()
    for process in stack.processes.values():
        await process.wait_ready(60)


@pytest.mark.parametrize("kind", ["store", "gateway", "notifier", "rabbitmq", "postgres"])
async def test_outage_loses_and_duplicates_no_acked_message(
    stack: Stack, stack_database_url: str, kind: str
) -> None:
    async with httpx.AsyncClient(headers={"Origin": ORIGIN}, timeout=10) as http:
        registered = await stack.register(http, f"res{kind}{uuid.uuid4().hex[:6]}")
        user_token = str(registered["access_token"])
        admin_token = await stack.login(http, stack.admin_username, ADMIN_PASSWORD)
        conversation_id = (await open_consultation(stack, http, user_token))["conversation_id"]

    user = ChatClient(stack.ws, user_token)
    admin = ChatClient(stack.ws, admin_token)
    await user.connect()
    await admin.connect()
    stop = asyncio.Event()
    keep_admin = asyncio.create_task(admin.stay_connected(stop))
    fault: asyncio.Task[None] | None = None
    acks = []
    for n in range(MESSAGES):
        if n == FAULT_AT:
            fault = asyncio.create_task(outage(stack, kind))
        acks.append(await user.send_reliably(conversation_id, f"{kind} message {n}"))
        await asyncio.sleep(0.05)
    assert fault is not None
    await fault

    # Every acked message is stored exactly once, in send order.
    conn = await asyncpg.connect(asyncpg_dsn(stack_database_url))
    try:
        rows = await conn.fetch(
            "SELECT seq, body FROM store.messages WHERE conversation_id = $1 ORDER BY seq",
            uuid.UUID(conversation_id),
        )
    finally:
        await conn.close()
    assert [r["body"] for r in rows] == [f"{kind} message {n}" for n in range(MESSAGES)]
    assert [r["seq"] for r in rows] == list(range(1, MESSAGES + 1))
    assert sorted(a["seq"] for a in acks) == list(range(1, MESSAGES + 1))

    # The admin, reconnecting and resuming as a client does, saw each message once and in order.
    await wait_until(lambda: admin.seen.get(conversation_id, 0) >= MESSAGES)
    stop.set()
    await keep_admin
    assert admin.seqs(conversation_id) == list(range(1, MESSAGES + 1))
    assert admin.reloads == []
    await user.close()
    await admin.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)
