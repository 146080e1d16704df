"""Write a batch of sends in one transaction: lock, dedupe, sequence, insert, outbox.

Conversation rows are locked in id order (no deadlocks between replicas) and
held until commit, which is what makes ``seq`` gapless and makes a retried
``(sender, client_id)`` find the first copy instead of inserting a second.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.adapters.rows import (
    Rows,
    conversation_frame,
    message_payload,
    message_view,
    state_of,
    write_outbox,
)
from services.store.adapters.tables import messages
from services.store.domain.rules import (
    ConversationState,
    DomainError,
    Who,
    admit_flood,
    admit_send,
    check_body,
    count_sent,
    next_seq,
    not_found,
    participants,
    preview,
)
from shared.commands import Actor, MessageView, SendMessage, SendResult, message_frame
from shared.events import (
    ConversationPayload,
    ConversationUpdated,
    MessageCreated,
    MessageUnread,
    MessageUnreadPayload,
)

LOCK_CONVERSATIONS = text(
    """
    SELECT id, user_id, admin_id, status, subject, last_seq, flood_window_start, flood_count,
           user_read_seq, admin_read_seq, user_unread, admin_unread
    FROM store.conversations WHERE id = ANY(:ids) ORDER BY id FOR UPDATE
    """
)
EXISTING = text(
    """
    SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.client_id, m.body,
           m.created_at, m.edited_at, m.deleted_at
    FROM store.messages m
    JOIN unnest(CAST(:senders AS uuid[]), CAST(:client_ids AS text[])) AS k(sender_id, client_id)
      ON m.sender_id = k.sender_id AND m.client_id = k.client_id
    """
)
NAMES = text(
    "SELECT user_id, coalesce(display_name, username) AS name FROM store.users WHERE user_id = ANY(:ids)"
)
UPDATE_CONVERSATION = text(
    """
    UPDATE store.conversations SET
        last_seq = :last_seq, status = :status, updated_at = :updated_at, last_activity_at = :now,
        last_message_preview = :preview, user_read_seq = :user_read_seq, admin_read_seq = :admin_read_seq,
        user_unread = :user_unread, admin_unread = :admin_unread,
        flood_window_start = :flood_window_start, flood_count = :flood_count
    WHERE id = :id
    """
)


NAME_TTL_S = 30.0


@dataclass(frozen=True)
class SendItem:
    actor: Actor
    request: SendMessage


@dataclass
class NewMessage:
    view: MessageView
    conv: ConversationState


class SendWriter:
    """The group-commit flush for ``message.send``."""

    def __init__(
        self,
        *,
        rows: Rows,
        admin_scope: str,
        reopen_on_user_message: bool,
        max_body_chars: int,
        flood_cap: int,
    ) -> None:
        self.rows = rows
        self.admin_scope = admin_scope
        self.reopen_on_user_message = reopen_on_user_message
        self.max_body_chars = max_body_chars
        self.flood_cap = flood_cap
        self._name_cache: dict[uuid.UUID, tuple[str, float]] = {}  # sender -> (name, expires)

    async def write(
        self, conn: AsyncConnection, items: list[SendItem], now: datetime
    ) -> list[SendResult | BaseException]:
        outcomes: list[SendResult | BaseException] = []
        conv_ids = sorted({item.request.conversation_id for item in items})
        locked = (await conn.execute(LOCK_CONVERSATIONS, {"ids": conv_ids})).all()
        convs = {row.id: state_of(row) for row in locked}
        existing = {
            (row.sender_id, row.client_id): message_view(row)
            for row in await conn.execute(
                EXISTING,
                {
                    "senders": [item.actor.user_id for item in items],
                    "client_ids": [item.request.client_id for item in items],
                },
            )
        }
        created: list[NewMessage] = []
        previews: dict[uuid.UUID, str] = {}
        for item in items:
            try:
                outcomes.append(self._decide(item, convs, existing, created, previews, now))
            except DomainError as exc:
                outcomes.append(exc)
        if created:
            await self._persist(conn, created, convs, previews, now)
        return outcomes

    def _decide(
        self,
        item: SendItem,
        convs: dict[uuid.UUID, ConversationState],
        existing: dict[tuple[uuid.UUID, str], MessageView],
        created: list[NewMessage],
        previews: dict[uuid.UUID, str],
        now: datetime,
    ) -> SendResult:
        actor, request = item.actor, item.request
        who = Who(actor.user_id, actor.role == "ADMIN")
        conv = convs.get(request.conversation_id)
        if conv is None:
            raise not_found()
        key = (actor.user_id, request.client_id)
        first = existing.get(key)
        if first is not None:
            if first.conversation_id != request.conversation_id:
                raise DomainError("client_id_reused", "client_id already used for another conversation", 409)
            return SendResult(message=first, duplicate=True)
        check_body(request.body, self.max_body_chars)
        admit_send(
            who, conv, admin_scope=self.admin_scope, reopen_on_user_message=self.reopen_on_user_message
        )
        admit_flood(conv, now, self.flood_cap)
        seq = next_seq(conv)
        count_sent(who, conv, seq)
        view = MessageView(
            message_id=uuid.uuid4(),
            conversation_id=conv.id,
            seq=seq,
            sender_id=actor.user_id,
            client_id=request.client_id,
            body=request.body,
            created_at=now,
        )
        existing[key] = view  # the same key twice in one batch is one message
        created.append(NewMessage(view, conv))
        previews[conv.id] = preview(request.body)
        return SendResult(message=view)

    async def _persist(
        self,
        conn: AsyncConnection,
        created: list[NewMessage],
        convs: dict[uuid.UUID, ConversationState],
        previews: dict[uuid.UUID, str],
        now: datetime,
    ) -> None:
        await conn.execute(
            insert(messages),
            [
                {
                    "id": new.view.message_id,
                    "conversation_id": new.view.conversation_id,
                    "seq": new.view.seq,
                    "sender_id": new.view.sender_id,
                    "client_id": new.view.client_id,
                    "body": new.view.body,
                    "created_at": now,
                }
                for new in created
            ],
        )
        touched = [conv for conv in convs.values() if conv.new_seqs]
        await conn.execute(
            UPDATE_CONVERSATION,
            [
                {
                    "id": conv.id,
                    "last_seq": conv.last_seq,
                    "status": conv.status,
                    "updated_at": now,
                    "now": now,
                    "preview": previews[conv.id],
                    "user_read_seq": conv.user_read_seq,
                    "admin_read_seq": conv.admin_read_seq,
                    "user_unread": conv.user_unread,
                    "admin_unread": conv.admin_unread,
                    "flood_window_start": conv.flood_window_start,
                    "flood_count": conv.flood_count,
                }
                for conv in touched
            ],
        )
        names = await self._names(conn, {new.view.sender_id for new in created})
        outbox: list[dict[str, Any]] = []
        for conv in touched:
            if conv.reopened:
                payload = _payload(conv)
                outbox.append(self.rows.event(ConversationUpdated(payload=payload)))
                outbox.append(self.rows.delivery(conversation_frame(payload), participants(conv)))
        for new in created:
            outbox.extend(self.message_rows(new, names))
        await write_outbox(conn, outbox)

    async def _names(self, conn: AsyncConnection, senders: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Display names for ``message.unread``, cached briefly: they rarely change, sends are hot."""
        now = time.monotonic()
        missing = [s for s in senders if self._name_cache.get(s, ("", 0.0))[1] <= now]
        if missing:
            found = {row.user_id: row.name for row in await conn.execute(NAMES, {"ids": missing})}
            if len(self._name_cache) > 50_000:
                self._name_cache.clear()
            for sender in missing:
                self._name_cache[sender] = (found.get(sender, ""), now + NAME_TTL_S)
        return {s: self._name_cache[s][0] for s in senders if self._name_cache[s][0]}

    def message_rows(self, new: NewMessage, names: dict[uuid.UUID, str]) -> list[dict[str, Any]]:
        view, conv = new.view, new.conv
        to = participants(conv, also=view.sender_id)
        rows = [
            self.rows.delivery(message_frame("message.new", view), to, conversation_id=conv.id, seq=view.seq),
            self.rows.event(MessageCreated(payload=message_payload(view))),
        ]
        for recipient in to:
            if recipient == view.sender_id:
                continue
            rows.append(
                self.rows.event(
                    MessageUnread(
                        payload=MessageUnreadPayload(
                            recipient_id=recipient,
                            message_id=view.message_id,
                            conversation_id=conv.id,
                            seq=view.seq,
                            sender_id=view.sender_id,
                            sender_name=names.get(view.sender_id),
                            body=view.body,
                            created_at=view.created_at,
                        )
                    )
                )
            )
        return rows


def _payload(conv: ConversationState) -> ConversationPayload:
    return ConversationPayload(
        conversation_id=conv.id,
        user_id=conv.user_id,
        admin_id=conv.admin_id,
        subject=conv.subject,
        status=conv.status,  # type: ignore[arg-type]
        last_seq=conv.last_seq,
    )
