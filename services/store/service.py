# ruff: noqa: S608  (SQL is assembled only from code constants; every value is a bound parameter)
"""The store's use cases: one method per RPC, each one transaction, rules from ``domain``.

Methods take the verified actor and a typed request from ``shared.commands``
and return its typed result; a ``DomainError`` carries the client-facing code.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Histogram
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.adapters.rows import (
    Rows,
    conversation_frame,
    conversation_view,
    message_payload,
    message_view,
    state_of,
    write_outbox,
)
from services.store.adapters.sending import RETURNING_STATE, SEND_PATH, NewMessage, SendItem, SendWriter
from services.store.domain.rules import (
    ConversationState,
    DomainError,
    Who,
    can_access,
    check_body,
    inbox_allowed,
    not_found,
    participants,
    preview,
    read_target,
    reassign_allowed,
    side_of,
    status_change_allowed,
)
from services.store.settings import StoreSettings
from shared.batching import GroupCommit
from shared.commands import (
    Actor,
    AdminInbox,
    ConversationList,
    ConversationView,
    DeleteMessage,
    EditMessage,
    GetConversation,
    History,
    HistoryPage,
    ListConversations,
    MarkRead,
    MessageResult,
    MessageView,
    OpenConversation,
    OpenConversationResult,
    ReadResult,
    Search,
    SearchResult,
    SendMany,
    SendManyResult,
    SendMessage,
    SendOutcome,
    SendResult,
    Sync,
    SyncResult,
    UpdateConversation,
    encode_frame,
    message_frame,
)
from shared.db import driver_connection, driver_transaction
from shared.events import (
    ConversationCreated,
    ConversationPayload,
    ConversationUpdated,
    MessageRead,
    MessageReadPayload,
    MessageUpdated,
)
from shared.messaging.topology import Topology

MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.sender_id, m.client_id, m.body,"
    " m.created_at, m.edited_at, m.deleted_at"
)
CONVERSATION_COLUMNS = """
    c.id, c.user_id, c.admin_id, c.subject, c.status, c.created_at, c.updated_at, c.last_activity_at,
    c.last_seq, c.last_message_preview, c.user_read_seq, c.admin_read_seq, c.user_unread, c.admin_unread,
    c.flood_window_start, c.flood_count
"""
VIEW_FROM = f"""
    SELECT {CONVERSATION_COLUMNS}, cp.id AS counterpart_id,
           coalesce(cu.display_name, cu.username) AS counterpart_name, p.state AS counterpart_presence
    FROM store.conversations c
    CROSS JOIN LATERAL (SELECT CASE WHEN c.user_id = :me THEN c.admin_id ELSE c.user_id END AS id) cp
    LEFT JOIN store.users cu ON cu.user_id = cp.id
    LEFT JOIN store.presence p ON p.user_id = cp.id
"""
PICK_ADMIN = text(
    """
    SELECT u.user_id FROM store.users u
    LEFT JOIN store.presence p ON p.user_id = u.user_id
    WHERE u.role = 'ADMIN'
    ORDER BY coalesce(p.state, 'offline') = 'offline',
             (SELECT count(*) FROM store.conversations c
              WHERE c.admin_id = u.user_id AND c.status <> 'CLOSED'),
             u.user_id
    LIMIT 1
    """
)


COMMIT_BATCH = Histogram(
    "chat_store_send_commit_batch_size",
    "Sends committed in one transaction",
    buckets=(1, 2, 4, 8, 16, 64, 256),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _who(actor: Actor) -> Who:
    return Who(actor.user_id, actor.role == "ADMIN")


def _payload(conv: ConversationState | ConversationView) -> ConversationPayload:
    if isinstance(conv, ConversationView):
        cid, subject = conv.conversation_id, conv.subject
    else:
        cid, subject = conv.id, conv.subject
    return ConversationPayload(
        conversation_id=cid,
        user_id=conv.user_id,
        admin_id=conv.admin_id,
        subject=subject,
        status=conv.status,  # type: ignore[arg-type]
        last_seq=conv.last_seq,
    )


class StoreService:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: StoreSettings,
        topology: Topology,
        *,
        on_commit: Callable[[], None] = lambda: None,
        hand_over: Callable[[Sequence[Mapping[str, Any]], list[int]], None] = lambda _rows, _ids: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.rows = Rows(topology)
        self.on_commit = on_commit  # wakes the outbox relay right after a commit
        self.hand_over = hand_over  # gives the relay a send batch's leased rows right after its commit
        self.sender = SendWriter(
            rows=self.rows,
            admin_scope=settings.admin_scope,
            reopen_on_user_message=settings.reopen_on_user_message,
            max_body_chars=settings.max_body_chars,
            flood_cap=settings.flood_cap_per_minute,
            lease=timedelta(seconds=settings.outbox_lease_s),
        )
        self.sends: GroupCommit[SendItem, SendResult] = GroupCommit(
            self._flush_sends, max_batch=settings.max_batch, max_in_flight=settings.max_flushes_in_flight
        )

    # --- sending (group commit) ---------------------------------------------

    async def send_message(self, actor: Actor, request: SendMessage) -> SendResult:
        return await self.sends.submit(SendItem(actor, request))

    async def send_many(self, _gateway: Actor | None, request: SendMany) -> SendManyResult:
        """Each item is its own actor's send; all of them join the same group commit."""
        results = await asyncio.gather(
            *(self.send_message(item.actor, item.request) for item in request.items), return_exceptions=True
        )
        outcomes = []
        for result in results:
            if isinstance(result, DomainError):
                error = {"code": result.code, "message": result.message, "status": result.status}
                outcomes.append(SendOutcome(error={**result.extra, **error}))
            elif isinstance(result, BaseException):
                raise result
            else:
                outcomes.append(SendOutcome(result=result))
        return SendManyResult(outcomes=outcomes)

    async def _flush_sends(self, items: list[SendItem]) -> list[SendResult | BaseException]:
        # First without looking for earlier copies: retried sends are rare, and the unique index
        # refuses a copy, which sends the batch down the careful path.
        with contextlib.suppress(asyncpg.UniqueViolationError):
            fast = await self._write_if_unchanged(items)
            return fast if fast is not None else await self._write_sends(items, lookup=False)
        try:
            return await self._write_sends(items, lookup=True)
        except asyncpg.UniqueViolationError:
            if len(items) == 1:
                # A concurrent replica committed the same (sender, client_id): now it is found.
                return await self._write_sends(items, lookup=True)
            # One bad request must not fail its neighbours: retry each on its own.
            return [await self._write_one(item) for item in items]

    async def _write_one(self, item: SendItem) -> SendResult | BaseException:
        try:
            return (await self._flush_sends([item]))[0]
        except Exception as exc:
            return exc

    async def _write_if_unchanged(self, items: list[SendItem]) -> list[SendResult | BaseException] | None:
        now = utcnow()
        async with driver_connection(self.engine) as pg:
            written = await self.sender.write_if_unchanged(pg, items, now)
        if written is None:
            return None
        COMMIT_BATCH.observe(len(items))
        outcomes, outbound = written
        self.hand_over(outbound.rows, outbound.ids)
        return outcomes

    async def _write_sends(self, items: list[SendItem], *, lookup: bool) -> list[SendResult | BaseException]:
        COMMIT_BATCH.observe(len(items))
        SEND_PATH.labels("locked").inc()
        now = utcnow()
        async with driver_transaction(self.engine) as pg:
            outcomes, outbound = await self.sender.write(pg, items, now, lookup=lookup)
        if outbound is not None:
            self.hand_over(outbound.rows, outbound.ids)
        return outcomes

    # --- conversations -------------------------------------------------------

    async def open_conversation(self, actor: Actor, request: OpenConversation) -> OpenConversationResult:
        who = _who(actor)
        if who.is_admin:
            raise DomainError("forbidden", "consultations are opened by users", 403)
        if request.body is not None:
            check_body(request.body, self.settings.max_body_chars)
        try:
            return await self._open(actor, request)
        except IntegrityError:
            if request.client_id is None:
                raise
            return await self._open(actor, request)  # the concurrent first copy is visible now

    async def _open(self, actor: Actor, request: OpenConversation) -> OpenConversationResult:
        now = utcnow()
        async with self.engine.begin() as conn:
            if request.client_id is not None:
                found = await self._opened_before(conn, actor, request.client_id)
                if found is not None:
                    return found
            admin_id = self.settings.fixed_admin_id or (await conn.execute(PICK_ADMIN)).scalar()
            conv = ConversationState(
                id=uuid.uuid4(),
                user_id=actor.user_id,
                admin_id=admin_id,
                status="OPEN",
                subject=request.subject,
            )
            message: MessageView | None = None
            if request.body is not None:
                conv.last_seq = conv.user_read_seq = 1
                conv.admin_unread = 1 if admin_id is not None else 0
                conv.flood_window_start, conv.flood_count = now, 1
                message = MessageView(
                    message_id=uuid.uuid4(),
                    conversation_id=conv.id,
                    seq=1,
                    sender_id=actor.user_id,
                    client_id=f"open:{request.client_id or uuid.uuid4().hex}",
                    body=request.body,
                    created_at=now,
                )
            created = await conn.execute(
                text(
                    f"""
                    INSERT INTO store.conversations (id, user_id, admin_id, subject, status, client_id,
                        created_at, updated_at, last_activity_at, last_seq, last_message_preview,
                        user_read_seq, admin_unread, flood_window_start, flood_count)
                    VALUES (:id, :user_id, :admin_id, :subject, 'OPEN', :client_id, :now, :now, :now,
                        :last_seq, :preview, :user_read_seq, :admin_unread, :flood_window_start, :flood_count)
                    {RETURNING_STATE}
                    """
                ),
                {
                    "id": conv.id,
                    "user_id": conv.user_id,
                    "admin_id": admin_id,
                    "subject": request.subject,
                    "client_id": request.client_id,
                    "now": now,
                    "last_seq": conv.last_seq,
                    "preview": preview(request.body) if request.body else None,
                    "user_read_seq": conv.user_read_seq,
                    "admin_unread": conv.admin_unread,
                    "flood_window_start": conv.flood_window_start,
                    "flood_count": conv.flood_count,
                },
            )
            row = created.mappings().one()
            payload = _payload(conv)
            outbox = [
                self.rows.event(ConversationCreated(payload=payload)),
                self.rows.delivery(conversation_frame(payload), participants(conv)),
            ]
            if message is not None:
                await conn.execute(
                    text(
                        """
                        INSERT INTO store.messages
                            (id, conversation_id, seq, sender_id, client_id, body, created_at)
                        VALUES (:id, :cid, 1, :sender, :client_id, :body, :now)
                        """
                    ),
                    {
                        "id": message.message_id,
                        "cid": conv.id,
                        "sender": actor.user_id,
                        "client_id": message.client_id,
                        "body": message.body,
                        "now": now,
                    },
                )
                conv.new_seqs.append(1)
                names = {actor.user_id: await self._name(conn, actor.user_id)}
                outbox.extend(self.sender.message_rows(NewMessage(message, conv), names))
            await write_outbox(conn, outbox)
            view = await self._view(conn, conv.id, actor.user_id)
        self.sender.remember(row)  # committed: the first reply can take the one-statement path
        self.on_commit()
        return OpenConversationResult(conversation=view, message=message)

    async def _opened_before(
        self, conn: AsyncConnection, actor: Actor, client_id: str
    ) -> OpenConversationResult | None:
        cid = (
            await conn.execute(
                text("SELECT id FROM store.conversations WHERE user_id = :me AND client_id = :cid"),
                {"me": actor.user_id, "cid": client_id},
            )
        ).scalar()
        if cid is None:
            return None
        first = (
            await conn.execute(
                text(
                    f"SELECT {MESSAGE_COLUMNS} FROM store.messages m"
                    " WHERE m.sender_id = :me AND m.client_id = :c"
                ),
                {"me": actor.user_id, "c": f"open:{client_id}"},
            )
        ).first()
        return OpenConversationResult(
            conversation=await self._view(conn, cid, actor.user_id),
            message=message_view(first) if first is not None else None,
            duplicate=True,
        )

    async def _name(self, conn: AsyncConnection, user_id: uuid.UUID) -> str:
        name = (
            await conn.execute(
                text("SELECT coalesce(display_name, username) FROM store.users WHERE user_id = :id"),
                {"id": user_id},
            )
        ).scalar()
        return str(name) if name is not None else ""

    async def _view(
        self, conn: AsyncConnection, conversation_id: uuid.UUID, me: uuid.UUID
    ) -> ConversationView:
        row = (
            await conn.execute(text(VIEW_FROM + " WHERE c.id = :id"), {"id": conversation_id, "me": me})
        ).one()
        return conversation_view(row, me)

    async def _accessible(
        self, conn: AsyncConnection, actor: Actor, conversation_id: uuid.UUID, *, lock: bool = False
    ) -> ConversationState:
        """Load a conversation the actor may see, or answer 404 for anything else."""
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM store.conversations c WHERE c.id = :id"
        row = (
            await conn.execute(text(sql + (" FOR UPDATE" if lock else "")), {"id": conversation_id})
        ).first()
        if row is None:
            raise not_found()
        conv = state_of(row)
        if not can_access(_who(actor), conv, self.settings.admin_scope):
            raise not_found()
        return conv

    async def get_conversation(self, actor: Actor, request: GetConversation) -> ConversationView:
        async with self.engine.connect() as conn:
            await self._accessible(conn, actor, request.conversation_id)
            return await self._view(conn, request.conversation_id, actor.user_id)

    async def list_conversations(self, actor: Actor, request: ListConversations) -> ConversationList:
        column = "c.admin_id" if actor.role == "ADMIN" else "c.user_id"
        return await self._list(actor, f"{column} = :me", {}, request.limit, request.before)

    async def inbox(self, actor: Actor, request: AdminInbox) -> ConversationList:
        inbox_allowed(_who(actor), request.assignee, self.settings.admin_scope)
        where: list[str] = []
        params: dict[str, Any] = {}
        if request.assignee == "me":
            where.append("c.admin_id = :me")
        elif request.assignee == "unassigned":
            where.append("c.admin_id IS NULL")
        elif isinstance(request.assignee, uuid.UUID):
            where.append("c.admin_id = :assignee")
            params["assignee"] = request.assignee
        if request.status is not None:
            where.append("c.status = :status")
            params["status"] = request.status
        return await self._list(actor, " AND ".join(where) or "TRUE", params, request.limit, request.before)

    async def _list(
        self, actor: Actor, where: str, params: dict[str, Any], limit: int, before: datetime | None
    ) -> ConversationList:
        if before is not None:
            where += " AND c.last_activity_at < :before"
            params["before"] = before
        sql = VIEW_FROM + f" WHERE {where} ORDER BY c.last_activity_at DESC, c.id LIMIT :limit"
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), {**params, "me": actor.user_id, "limit": limit + 1})).all()
        views = [conversation_view(row, actor.user_id) for row in rows[:limit]]
        next_before = views[-1].last_activity_at if len(rows) > limit else None
        return ConversationList(conversations=views, next_before=next_before)

    async def update_conversation(self, actor: Actor, request: UpdateConversation) -> ConversationView:
        who = _who(actor)
        async with self.engine.begin() as conn:
            conv = await self._accessible(conn, actor, request.conversation_id, lock=True)
            status_change_allowed(who, conv, request.status)
            told = participants(conv)
            changes: dict[str, Any] = {}
            if request.status is not None and request.status != conv.status:
                changes["status"] = request.status
            if request.admin_id is not None and request.admin_id != conv.admin_id:
                reassign_allowed(who)
                role = (
                    await conn.execute(
                        text("SELECT role FROM store.users WHERE user_id = :id"), {"id": request.admin_id}
                    )
                ).scalar()
                if role != "ADMIN":
                    raise DomainError("unknown_admin", "no such administrator", 422)
                changes["admin_id"] = request.admin_id
            if request.subject is not None and request.subject != conv.subject:
                if not who.is_admin and who.user_id != conv.user_id:
                    raise DomainError("forbidden", "not your consultation", 403)
                changes["subject"] = request.subject
            if changes:
                sets = ", ".join(f"{name} = :{name}" for name in changes)
                await conn.execute(
                    text(f"UPDATE store.conversations SET {sets}, updated_at = :now WHERE id = :id"),
                    {**changes, "now": utcnow(), "id": conv.id},
                )
                self.sender.forget(conv.id)
            view = await self._view(conn, conv.id, actor.user_id)
            if changes:
                payload = _payload(view)
                await write_outbox(
                    conn,
                    [
                        self.rows.event(ConversationUpdated(payload=payload)),
                        self.rows.delivery(conversation_frame(payload), [*told, *participants(_state(view))]),
                    ],
                )
        if changes:
            self.on_commit()
        return view

    # --- messages -------------------------------------------------------------

    async def edit_message(self, actor: Actor, request: EditMessage) -> MessageResult:
        check_body(request.body, self.settings.max_body_chars)
        return await self._change_message(actor, request.message_id, body=request.body)

    async def delete_message(self, actor: Actor, request: DeleteMessage) -> MessageResult:
        return await self._change_message(actor, request.message_id, body=None)

    async def _change_message(
        self, actor: Actor, message_id: uuid.UUID, *, body: str | None
    ) -> MessageResult:
        """Edit (``body``) or delete (``None``) one's own message; the other side sees it live."""
        now = utcnow()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"""
                        SELECT {MESSAGE_COLUMNS}, c.user_id, c.admin_id, c.status
                        FROM store.messages m JOIN store.conversations c ON c.id = m.conversation_id
                        WHERE m.id = :id FOR UPDATE OF m
                        """
                    ),
                    {"id": message_id},
                )
            ).first()
            if row is None:
                raise not_found("message")
            conv = ConversationState(
                id=row.conversation_id, user_id=row.user_id, admin_id=row.admin_id, status=row.status
            )
            if not can_access(_who(actor), conv, self.settings.admin_scope):
                raise not_found("message")
            if row.sender_id != actor.user_id:
                raise DomainError("not_sender", "only the sender changes a message", 403)
            if row.deleted_at is not None:
                raise DomainError("message_deleted", "the message was deleted", 409)
            if body is None:
                sql = "UPDATE store.messages SET body = '', deleted_at = :now WHERE id = :id"
            else:
                sql = "UPDATE store.messages SET body = :body, edited_at = :now WHERE id = :id"
            await conn.execute(text(sql), {"id": message_id, "now": now, "body": body})
            view = message_view(row).model_copy(
                update={"body": "", "deleted_at": now} if body is None else {"body": body, "edited_at": now}
            )
            await write_outbox(
                conn,
                [
                    self.rows.event(MessageUpdated(payload=message_payload(view))),
                    self.rows.delivery(
                        message_frame("message.updated", view), participants(conv, also=actor.user_id)
                    ),
                ],
            )
        self.on_commit()
        return MessageResult(message=view)

    async def history(self, actor: Actor, request: History) -> HistoryPage:
        async with self.engine.connect() as conn:
            conv = await self._accessible(conn, actor, request.conversation_id)
            base = f"SELECT {MESSAGE_COLUMNS} FROM store.messages m WHERE m.conversation_id = :cid"
            params: dict[str, Any] = {"cid": conv.id, "limit": request.limit + 1}
            if request.after is not None:
                sql = base + " AND m.seq > :after"
                params["after"] = request.after
                if request.before is not None:
                    sql += " AND m.seq < :before"
                    params["before"] = request.before
                rows = (await conn.execute(text(sql + " ORDER BY m.seq LIMIT :limit"), params)).all()
                has_more = len(rows) > request.limit
                rows = rows[: request.limit]
            else:
                params["before"] = request.before if request.before is not None else conv.last_seq + 1
                sql = base + " AND m.seq < :before ORDER BY m.seq DESC LIMIT :limit"
                rows = (await conn.execute(text(sql), params)).all()
                has_more = len(rows) > request.limit
                rows = list(reversed(rows[: request.limit]))
        return HistoryPage(
            messages=[message_view(r) for r in rows], last_seq=conv.last_seq, has_more=has_more
        )

    async def mark_read(self, actor: Actor, request: MarkRead) -> ReadResult:
        who = _who(actor)
        async with self.engine.begin() as conn:
            conv = await self._accessible(conn, actor, request.conversation_id, lock=True)
            side = side_of(who, conv)
            if side is None:
                return ReadResult(
                    conversation_id=conv.id, read_seq=conv.admin_read_seq, unread=conv.admin_unread
                )
            current = conv.user_read_seq if side == "user" else conv.admin_read_seq
            target = read_target(current, request.seq, conv.last_seq)
            if target == current:
                unread = conv.user_unread if side == "user" else conv.admin_unread
                return ReadResult(conversation_id=conv.id, read_seq=current, unread=unread)
            unread = (
                await conn.execute(
                    text(
                        """
                        SELECT count(*) FROM store.messages WHERE conversation_id = :cid AND seq > :seq
                        AND sender_id <> :me AND deleted_at IS NULL
                        """
                    ),
                    {"cid": conv.id, "seq": target, "me": actor.user_id},
                )
            ).scalar_one()
            await conn.execute(
                text(
                    f"UPDATE store.conversations SET {side}_read_seq = :seq, {side}_unread = :unread"
                    " WHERE id = :id"
                ),
                {"seq": target, "unread": unread, "id": conv.id},
            )
            self.sender.forget(conv.id)
            payload = MessageReadPayload(conversation_id=conv.id, reader_id=actor.user_id, seq=target)
            await write_outbox(
                conn,
                [
                    self.rows.event(MessageRead(payload=payload)),
                    self.rows.delivery(
                        encode_frame("message.read", payload.model_dump(mode="json")), participants(conv)
                    ),
                ],
            )
        self.on_commit()
        return ReadResult(conversation_id=conv.id, read_seq=target, unread=int(unread))

    async def search(self, actor: Actor, request: Search) -> SearchResult:
        where = ["m.tsv @@ websearch_to_tsquery('simple', :q)", "m.deleted_at IS NULL"]
        if actor.role != "ADMIN":
            where.append("c.user_id = :me")
        elif self.settings.admin_scope != "all":
            where.append("c.admin_id = :me")
        params: dict[str, Any] = {"q": request.query, "me": actor.user_id, "limit": request.limit}
        if request.conversation_id is not None:
            where.append("m.conversation_id = :cid")
            params["cid"] = request.conversation_id
        sql = f"""
            SELECT {MESSAGE_COLUMNS}
            FROM store.messages m JOIN store.conversations c ON c.id = m.conversation_id
            WHERE {" AND ".join(where)} ORDER BY m.created_at DESC LIMIT :limit
        """
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), params)).all()
        return SearchResult(messages=[message_view(r) for r in rows])

    async def sync(self, actor: Actor, request: Sync) -> SyncResult:
        """Resume: every message after each given seq, or 'reload' where the gap is too large."""
        who = _who(actor)
        ids = list(request.conversations)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(f"SELECT {CONVERSATION_COLUMNS} FROM store.conversations c WHERE c.id = ANY(:ids)"),
                    {"ids": ids},
                )
            ).all()
            convs = {row.id: state_of(row) for row in rows}
            not_found_ids, reload, fetch = [], [], {}
            for cid, after in request.conversations.items():
                conv = convs.get(cid)
                if conv is None or not can_access(who, conv, self.settings.admin_scope):
                    not_found_ids.append(cid)
                elif conv.last_seq - after > request.max_replay:
                    reload.append(cid)
                elif conv.last_seq > after:
                    fetch[cid] = after
            found: list[MessageView] = []
            if fetch:
                result = await conn.execute(
                    text(
                        f"""
                        SELECT {MESSAGE_COLUMNS} FROM store.messages m
                        JOIN unnest(CAST(:ids AS uuid[]), CAST(:afters AS bigint[])) AS s(cid, after)
                          ON m.conversation_id = s.cid AND m.seq > s.after
                        ORDER BY m.conversation_id, m.seq
                        """
                    ),
                    {"ids": list(fetch), "afters": list(fetch.values())},
                )
                found = [message_view(r) for r in result]
        return SyncResult(messages=found, reload=reload, not_found=not_found_ids)


def _state(view: ConversationView) -> ConversationState:
    return ConversationState(
        id=view.conversation_id, user_id=view.user_id, admin_id=view.admin_id, status=view.status
    )
