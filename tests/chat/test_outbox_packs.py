"""A send batch writes its events packed: one outbox row per event type, every event inside it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.commands import OpenConversation, SendMessage
from shared.events import MessageCreated, MessageUnread, parse_event, parse_event_pack
from shared.messaging.packing import PACKED_HEADER
from tests.chat.conftest import make_service, register


async def event_rows(engine: AsyncEngine, routing_key: str, cid: uuid.UUID) -> list[list[object]]:
    """The events of ``cid`` in each outbox row of one type, row by row in id order (every row
    under its writer's lease)."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT body, message_id, headers, leased_until > now() AS leased FROM store.outbox"
                " WHERE routing_key = :key AND convert_from(body, 'UTF8') LIKE :cid ORDER BY id"
            ),
            {"key": routing_key, "cid": f"%{cid}%"},
        )
        out: list[list[object]] = []
        for body, message_id, headers, leased in found:
            assert leased  # its writer publishes it; no relay claims it meanwhile
            if headers is None:
                assert message_id is not None
                out.append([parse_event(body)])
            else:
                assert message_id is None and headers == {PACKED_HEADER: len(parse_event_pack(body))}
                out.append(list(parse_event_pack(body)))
        return out


async def test_a_batch_of_concurrent_sends_writes_each_event_type_as_one_packed_row_in_seq_order(
    engine: AsyncEngine,
) -> None:
    admin = await register(engine, "ADMIN")
    store = make_service(engine, fixed_admin_id=admin.user_id, flood_cap_per_minute=1000)
    user = await register(engine)
    cid = (await store.open_conversation(user, OpenConversation(subject="s"))).conversation.conversation_id
    sent = await asyncio.gather(
        *(
            store.send_message(user, SendMessage(conversation_id=cid, client_id=f"c{i}", body=f"b{i}"))
            for i in range(30)
        )
    )
    assert sorted(r.message.seq for r in sent) == list(range(1, 31))
    created = await event_rows(engine, "message.created", cid)
    unread = await event_rows(engine, "message.unread", cid)
    # A lone send goes at once and the rest wait for it: fewer rows than messages, none lost.
    assert len(created) < 30 and len(unread) < 30
    assert [[e.payload.seq for e in row] for row in created] == [  # type: ignore[attr-defined]
        [e.payload.seq for e in row]  # type: ignore[attr-defined]
        for row in unread
    ]
    assert all(isinstance(e, MessageCreated) for row in created for e in row)
    assert all(
        isinstance(e, MessageUnread) and e.payload.recipient_id == admin.user_id
        for row in unread
        for e in row
    )
    assert [e.payload.seq for row in created for e in row] == list(range(1, 31))  # type: ignore[attr-defined]
    assert len({e.id for row in created + unread for e in row}) == 60
