"""The send fast path: one guarded statement while the conversation is as this store last wrote it.

Each ``StoreService`` here is a replica with its own memory of conversation versions; the other
replica's writes (sends, read receipts, closing) must never be overwritten by a stale decision.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.domain.rules import DomainError
from services.store.service import StoreService
from shared.commands import (
    Actor,
    GetConversation,
    History,
    MarkRead,
    OpenConversation,
    SendMessage,
    SendResult,
    UpdateConversation,
)
from tests.chat.conftest import make_service, register


def batches(path: str) -> float:
    return REGISTRY.get_sample_value("chat_store_send_batches_total", {"path": path}) or 0.0


async def send(store: StoreService, actor: Actor, cid: uuid.UUID, client_id: str) -> SendResult:
    request = SendMessage(conversation_id=cid, client_id=client_id, body=client_id)
    return await store.send_message(actor, request)


async def conversation_row(engine: AsyncEngine, cid: uuid.UUID) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT last_seq, user_read_seq, admin_read_seq, user_unread, admin_unread, status"
                    " FROM store.conversations WHERE id = :id"
                ),
                {"id": cid},
            )
        ).one()
    return dict(row._mapping)


async def two_replicas(
    engine: AsyncEngine, **settings: object
) -> tuple[Actor, StoreService, StoreService, Actor]:
    """An administrator, two store replicas that assign consultations to them, and a user."""
    admin = await register(engine, "ADMIN")
    first = make_service(engine, fixed_admin_id=admin.user_id, **settings)
    second = make_service(engine, fixed_admin_id=admin.user_id, **settings)
    return admin, first, second, await register(engine)


async def test_sends_to_a_conversation_this_store_opened_take_the_one_statement_path(
    engine: AsyncEngine,
) -> None:
    admin = await register(engine, "ADMIN")
    store = make_service(engine, fixed_admin_id=admin.user_id)
    user = await register(engine)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    locked, unchanged = batches("locked"), batches("unchanged")
    results = [await send(store, user, cid, f"m{i}") for i in range(5)]
    assert [r.message.seq for r in results] == [1, 2, 3, 4, 5]
    assert batches("locked") - locked == 0  # the open remembered the row's version
    assert batches("unchanged") - unchanged == 5
    assert await conversation_row(engine, cid) == {
        "last_seq": 5,
        "user_read_seq": 5,
        "admin_read_seq": 0,
        "user_unread": 0,
        "admin_unread": 5,
        "status": "OPEN",
    }


async def test_a_reply_to_a_conversation_opened_with_a_message_counts_it_exactly(
    engine: AsyncEngine,
) -> None:
    admin, opener, other, user = await two_replicas(engine)
    opened = await opener.open_conversation(user, OpenConversation(subject="s", body="first"))
    cid = opened.conversation.conversation_id
    unchanged, locked = batches("unchanged"), batches("locked")
    assert (await send(opener, admin, cid, "reply")).message.seq == 2
    assert batches("unchanged") - unchanged == 1
    assert (await send(other, user, cid, "again")).message.seq == 3  # the other replica: locked path
    assert batches("locked") - locked == 1
    stale = batches("stale")
    assert (await send(opener, admin, cid, "late")).message.seq == 4  # its memory is stale now
    assert batches("stale") - stale == 1
    assert await conversation_row(engine, cid) == {
        "last_seq": 4,
        "user_read_seq": 3,
        "admin_read_seq": 4,
        "user_unread": 1,
        "admin_unread": 0,
        "status": "OPEN",
    }


async def test_two_replicas_taking_turns_on_one_conversation_keep_seq_gapless_and_counts_exact(
    engine: AsyncEngine,
) -> None:
    admin, first, second, user = await two_replicas(engine, flood_cap_per_minute=1000)
    cid = (await first.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    stale = batches("stale")
    for i in range(6):  # in turn: each replica's memory is stale every time
        await send(first if i % 2 else second, user, cid, f"t{i}")
    together = await asyncio.gather(
        *(send(first if i % 2 else second, admin if i % 3 else user, cid, f"g{i}") for i in range(30))
    )
    assert batches("stale") - stale >= 2
    assert sorted(r.message.seq for r in together) == list(range(7, 37))
    page = await first.history(user, History(conversation_id=cid, limit=100))
    assert [m.seq for m in page.messages] == list(range(1, 37))
    row = await conversation_row(engine, cid)
    assert row["last_seq"] == 36
    last_by_user = max(m.seq for m in page.messages if m.sender_id == user.user_id)
    last_by_admin = max(m.seq for m in page.messages if m.sender_id == admin.user_id)
    assert row["user_read_seq"] == last_by_user and row["admin_read_seq"] == last_by_admin
    assert row["admin_unread"] == sum(
        1 for m in page.messages if m.sender_id == user.user_id and m.seq > last_by_admin
    )
    assert row["user_unread"] == sum(
        1 for m in page.messages if m.sender_id == admin.user_id and m.seq > last_by_user
    )


async def test_a_read_receipt_taken_by_another_replica_survives_the_next_send(engine: AsyncEngine) -> None:
    admin, sender, reader, user = await two_replicas(engine)
    cid = (await sender.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    for i in range(3):
        await send(sender, user, cid, f"r{i}")
    read = await reader.mark_read(admin, MarkRead(conversation_id=cid, seq=3))
    assert read.unread == 0
    stale = batches("stale")
    await send(sender, user, cid, "after")  # decided on the row before the read: refused, then redone
    assert batches("stale") - stale == 1
    view = await sender.get_conversation(admin, GetConversation(conversation_id=cid))
    assert view.read_seq == 3 and view.unread == 1


async def test_a_conversation_closed_by_another_replica_refuses_the_next_administrator_send(
    engine: AsyncEngine,
) -> None:
    admin, sender, closer, user = await two_replicas(engine)
    cid = (await sender.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    await send(sender, admin, cid, "before")
    await closer.update_conversation(admin, UpdateConversation(conversation_id=cid, status="CLOSED"))
    with pytest.raises(DomainError) as caught:
        await send(sender, admin, cid, "after")
    assert caught.value.code == "conversation_closed"
    assert await conversation_row(engine, cid) == {
        "last_seq": 1,
        "user_read_seq": 0,
        "admin_read_seq": 1,
        "user_unread": 1,
        "admin_unread": 0,
        "status": "CLOSED",
    }


async def test_a_resend_to_a_known_conversation_returns_the_first_copy(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    store = make_service(engine, fixed_admin_id=admin.user_id)
    user = await register(engine)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    first = await send(store, user, cid, "once")
    await send(store, user, cid, "other")
    again = await send(store, user, cid, "once")  # the guarded statement meets the unique index
    assert again.duplicate and again.message.message_id == first.message.message_id
    following = await send(store, user, cid, "next")
    assert following.message.seq == 3
    assert (await conversation_row(engine, cid))["last_seq"] == 3
