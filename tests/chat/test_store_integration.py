"""The store against the real PostgreSQL: sequencing, idempotency, outbox, reads, search, access."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.domain.rules import DomainError
from shared.commands import (
    AdminInbox,
    DeleteMessage,
    EditMessage,
    GetConversation,
    History,
    ListConversations,
    MarkRead,
    OpenConversation,
    Search,
    SendMessage,
    Sync,
    UpdateConversation,
)
from tests.chat.conftest import make_service, register


async def outbox_types(engine: AsyncEngine, conversation_id: uuid.UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT routing_key, body FROM store.outbox ORDER BY id"),
        )
        return [r.routing_key for r in rows if str(conversation_id).encode() in bytes(r.body)]


async def test_open_assigns_an_admin_and_stores_the_first_message(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN", "Dr Admin")
    user = await register(engine, "USER", "Alice")
    store = make_service(engine, fixed_admin_id=admin.user_id)
    opened = await store.open_conversation(
        user, OpenConversation(subject="Help", body="hello", client_id="c1")
    )
    assert opened.conversation.admin_id == admin.user_id
    assert opened.message is not None and opened.message.seq == 1
    again = await store.open_conversation(
        user, OpenConversation(subject="Help", body="hello", client_id="c1")
    )
    assert again.duplicate and again.conversation.conversation_id == opened.conversation.conversation_id
    kinds = await outbox_types(engine, opened.conversation.conversation_id)
    assert kinds.count("conversation.created") == 1
    assert kinds.count("message.created") == 1
    assert kinds.count("message.unread") == 1
    admin_view = await store.get_conversation(
        admin, GetConversation(conversation_id=opened.conversation.conversation_id)
    )
    assert admin_view.unread == 1 and admin_view.counterpart_name == "Alice"


async def test_concurrent_sends_get_gapless_increasing_seqs_in_shared_transactions(
    engine: AsyncEngine,
) -> None:
    admin = await register(engine, "ADMIN")
    user = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id, flood_cap_per_minute=1000)
    conv = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation
    sends = [
        store.send_message(
            user if i % 2 else admin,
            SendMessage(conversation_id=conv.conversation_id, client_id=f"k{i}", body=f"m{i}"),
        )
        for i in range(40)
    ]
    results = await asyncio.gather(*sends)
    seqs = sorted(r.message.seq for r in results)
    assert seqs == list(range(1, 41))
    assert store.sends.largest > 1  # concurrent sends shared a transaction
    page = await store.history(user, History(conversation_id=conv.conversation_id, limit=100))
    assert [m.seq for m in page.messages] == list(range(1, 41))


async def test_retried_client_id_returns_the_original_message(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    user = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id)
    conv = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation
    request = SendMessage(conversation_id=conv.conversation_id, client_id="same", body="once")
    first, second, third = await asyncio.gather(
        store.send_message(user, request),
        store.send_message(user, request),
        store.send_message(user, request),
    )
    assert first.message.message_id == second.message.message_id == third.message.message_id
    assert [first.duplicate, second.duplicate, third.duplicate].count(False) == 1
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                text("SELECT count(*) FROM store.messages WHERE conversation_id = :c"),
                {"c": conv.conversation_id},
            )
        ).scalar_one()
    assert count == 1


async def test_foreign_conversation_answers_not_found_everywhere(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    other_admin = await register(engine, "ADMIN")
    owner = await register(engine)
    intruder = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id)
    opened = await store.open_conversation(
        owner, OpenConversation(subject="s", body="secret words", client_id="x")
    )
    cid = opened.conversation.conversation_id
    assert opened.message is not None
    mid = opened.message.message_id
    attempts = [
        store.get_conversation(intruder, GetConversation(conversation_id=cid)),
        store.send_message(intruder, SendMessage(conversation_id=cid, client_id="i", body="hi")),
        store.history(intruder, History(conversation_id=cid)),
        store.mark_read(intruder, MarkRead(conversation_id=cid, seq=1)),
        store.edit_message(intruder, EditMessage(message_id=mid, body="x")),
        store.delete_message(intruder, DeleteMessage(message_id=mid)),
        store.update_conversation(intruder, UpdateConversation(conversation_id=cid, subject="x")),
        store.get_conversation(other_admin, GetConversation(conversation_id=cid)),
        store.history(other_admin, History(conversation_id=cid)),
    ]
    for attempt in attempts:
        with pytest.raises(DomainError) as caught:
            await attempt
        assert caught.value.status == 404 and caught.value.code in ("not_found",)
    synced = await store.sync(intruder, Sync(conversations={cid: 0}))
    assert synced.not_found == [cid] and synced.messages == []
    assert (await store.search(intruder, Search(query="secret"))).messages == []
    assert (await store.list_conversations(intruder, ListConversations())).conversations == []


async def test_flood_cap_refuses_with_a_clear_code(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    user = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id, flood_cap_per_minute=3)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    for i in range(3):
        await store.send_message(user, SendMessage(conversation_id=cid, client_id=f"f{i}", body="x"))
    with pytest.raises(DomainError) as caught:
        await store.send_message(user, SendMessage(conversation_id=cid, client_id="f4", body="x"))
    assert caught.value.code == "flood_limited" and caught.value.status == 429
    assert int(caught.value.extra["retry_after_s"]) >= 1  # type: ignore[call-overload]


async def test_read_receipts_edit_delete_search_and_inbox(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    user = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    for i, word in enumerate(["hello", "zebracrossing today", "bye"]):
        await store.send_message(user, SendMessage(conversation_id=cid, client_id=f"r{i}", body=word))
    assert (await store.get_conversation(admin, GetConversation(conversation_id=cid))).unread == 3
    read = await store.mark_read(admin, MarkRead(conversation_id=cid, seq=2))
    assert read.read_seq == 2 and read.unread == 1
    assert (
        await store.mark_read(admin, MarkRead(conversation_id=cid, seq=1))
    ).read_seq == 2  # never backwards
    found = await store.search(admin, Search(query="zebracrossing"))
    assert [m.seq for m in found.messages] == [2]
    assert [m.seq for m in (await store.search(user, Search(query="zebracrossing"))).messages] == [2]
    target = found.messages[0].message_id
    with pytest.raises(DomainError) as caught:
        await store.edit_message(admin, EditMessage(message_id=target, body="hijack"))
    assert caught.value.code == "not_sender"
    edited = await store.edit_message(user, EditMessage(message_id=target, body="edited text"))
    assert edited.message.edited_at is not None and edited.message.body == "edited text"
    deleted = await store.delete_message(user, DeleteMessage(message_id=target))
    assert deleted.message.deleted_at is not None and deleted.message.body == ""
    assert (await store.search(user, Search(query="edited"))).messages == []
    inbox = await store.inbox(admin, AdminInbox(status="OPEN"))
    assert cid in [c.conversation_id for c in inbox.conversations]
    closed = await store.update_conversation(admin, UpdateConversation(conversation_id=cid, status="CLOSED"))
    assert closed.status == "CLOSED"
    with pytest.raises(DomainError) as caught:
        await store.update_conversation(user, UpdateConversation(conversation_id=cid, status="OPEN"))
    assert caught.value.code == "forbidden"
    await store.send_message(user, SendMessage(conversation_id=cid, client_id="reopen", body="again"))
    assert (await store.get_conversation(user, GetConversation(conversation_id=cid))).status == "OPEN"


async def test_sync_replays_the_gap_or_asks_for_reload(engine: AsyncEngine) -> None:
    admin = await register(engine, "ADMIN")
    user = await register(engine)
    store = make_service(engine, fixed_admin_id=admin.user_id)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    for i in range(6):
        await store.send_message(admin, SendMessage(conversation_id=cid, client_id=f"s{i}", body=f"{i}"))
    replay = await store.sync(user, Sync(conversations={cid: 3}))
    assert [m.seq for m in replay.messages] == [4, 5, 6] and replay.reload == []
    too_far = await store.sync(user, Sync(conversations={cid: 0}, max_replay=2))
    assert too_far.reload == [cid] and too_far.messages == []


async def test_new_consultations_go_to_the_least_loaded_online_admin(engine: AsyncEngine) -> None:
    busy_online, idle_offline = await register(engine, "ADMIN"), await register(engine, "ADMIN")
    store = make_service(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE store.presence SET state = 'offline'"))
        await conn.execute(
            text(
                """
                INSERT INTO store.presence (user_id, state, last_seen, occurred_at)
                VALUES (:id, 'active', now(), now())
                """
            ),
            {"id": busy_online.user_id},
        )
    first = await store.open_conversation(await register(engine), OpenConversation(subject="a"))
    second = await store.open_conversation(await register(engine), OpenConversation(subject="b"))
    assert first.conversation.admin_id == busy_online.user_id  # online beats idle_offline's zero load
    assert second.conversation.admin_id == busy_online.user_id
    assert first.conversation.counterpart_presence == "active"
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE store.presence SET state = 'offline'"))
    fallback = await store.open_conversation(await register(engine), OpenConversation(subject="c"))
    assert fallback.conversation.admin_id is not None
    assert fallback.conversation.admin_id != busy_online.user_id  # least-loaded overall now
    assert idle_offline.user_id != busy_online.user_id
