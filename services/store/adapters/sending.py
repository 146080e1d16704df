# ruff: noqa: S608  (SQL is assembled only from code constants; every value is a bound parameter)
"""Write a batch of sends in one transaction: lock, dedupe, sequence, insert, outbox.

Conversation rows are locked in id order (no deadlocks between replicas) and
held until commit, which is what makes ``seq`` gapless and makes a retried
``(sender, client_id)`` find the first copy instead of inserting a second.

The fast path skips the locking round trips: rules are decided on the conversation as this
process last wrote or read it, and one statement writes the batch only if every row still has
the version (``xmin``) it was decided on — otherwise it writes nothing and the locked path runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.store.adapters.rows import (
    Rows,
    bundles,
    conversation_frame,
    message_payload,
    message_view_of_record,
    outbox_columns,
    state_of_record,
)
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
from shared.commands import Actor, Delivery, MessageView, SendMessage, SendResult, message_frame
from shared.events import (
    ConversationPayload,
    ConversationUpdated,
    MessageCreated,
    MessageUnread,
    MessageUnreadPayload,
)

# The send path speaks asyncpg directly (numbered parameters, prepared and cached per connection):
# SQLAlchemy's per-statement cost was a third of the store's CPU per message.
# Every column the send rules read (``state_of_record``).
STATE_COLUMNS = """id, user_id, admin_id, status, subject, last_seq, flood_window_start, flood_count,
    user_read_seq, admin_read_seq, user_unread, admin_unread"""
LOCK_CONVERSATIONS = f"""
    SELECT {STATE_COLUMNS}
    FROM store.conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
"""
# A row version: xmin changes with every update of the row, whoever makes it.
VERSION = "xmin::text::bigint"
# For a statement that writes a conversation: what ``SendWriter.remember`` needs of the row.
RETURNING_STATE = f"RETURNING {STATE_COLUMNS}, {VERSION} AS version"
EXISTING = """
    SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.client_id, m.body,
           m.created_at, m.edited_at, m.deleted_at
    FROM store.messages m
    JOIN unnest($1::uuid[], $2::text[]) AS k(sender_id, client_id)
      ON m.sender_id = k.sender_id AND m.client_id = k.client_id
"""
NAMES = """
    SELECT user_id, coalesce(display_name, username) AS name FROM store.users WHERE user_id = ANY($1::uuid[])
"""


def write_batch_sql(*, guarded: bool) -> str:
    """Messages, conversation counters and outbox rows of a whole batch in one statement.

    Returns each updated conversation's new version and the ids of the outbox rows, which are
    leased until $24 (their writer publishes them, ``OutboxRelay.hand_over``). ``guarded``: first
    lock the rows whose version is still the one given ($25, $26, in id order) and write only if
    all of them are, so a stale decision writes nothing; one autocommit round trip then replaces
    BEGIN, lock, write and COMMIT.
    """
    only_if = "AND (SELECT ok FROM ready)" if guarded else ""
    guard = (
        f"""
        locked AS MATERIALIZED (
            SELECT c.id FROM store.conversations c
            JOIN unnest($25::uuid[], $26::bigint[]) AS k(id, version) ON c.id = k.id
            WHERE c.{VERSION} = k.version
            ORDER BY c.id FOR UPDATE OF c
        ), ready AS MATERIALIZED (SELECT count(*) = cardinality($25::uuid[]) AS ok FROM locked),"""
        if guarded
        else ""
    )
    return f"""
    WITH {guard}
    new_messages AS (
        INSERT INTO store.messages (id, conversation_id, seq, sender_id, client_id, body, created_at)
        SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.client_id, m.body, $7
        FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::text[], $6::text[])
            AS m(id, conversation_id, seq, sender_id, client_id, body)
        WHERE true {only_if}
    ), touched AS (
        UPDATE store.conversations c SET
            last_seq = u.last_seq, status = u.status, updated_at = $7, last_activity_at = $7,
            last_message_preview = u.preview, user_read_seq = u.user_read_seq,
            admin_read_seq = u.admin_read_seq, user_unread = u.user_unread, admin_unread = u.admin_unread,
            flood_window_start = u.flood_window_start, flood_count = u.flood_count
        FROM unnest($8::uuid[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::bigint[],
                    $14::int[], $15::int[], $16::timestamptz[], $17::int[])
            AS u(id, last_seq, status, preview, user_read_seq, admin_read_seq, user_unread, admin_unread,
                 flood_window_start, flood_count)
        WHERE c.id = u.id {only_if}
        RETURNING c.id, c.{VERSION} AS version
    ), events AS (
        INSERT INTO store.outbox (exchange, routing_key, body, message_id, persistent, headers, leased_until)
        SELECT *, $24::timestamptz
        FROM unnest($18::text[], $19::text[], $20::bytea[], $21::text[], $22::bool[], $23::jsonb[])
        WHERE true {only_if}
        RETURNING id
    )
    SELECT id, version, (SELECT array_agg(id ORDER BY id) FROM events) AS outbox_ids FROM touched
    """


WRITE_BATCH = write_batch_sql(guarded=False)
WRITE_BATCH_IF_UNCHANGED = write_batch_sql(guarded=True)
# Conversations this process knows the current version of (about 750 bytes each); beyond this
# many, it starts over: the hot set is small, and a forgotten one costs one locked send.
KNOWN_MAX = 20_000


SEND_PATH = Counter(
    "chat_store_send_batches_total",
    "Send batches by path: unchanged (one guarded statement), or the locked path after an unknown"
    " conversation, a refusal or a stale version",
    ["path"],
)
NAME_TTL_S = 30.0


@dataclass(frozen=True)
class SendItem:
    actor: Actor
    request: SendMessage


@dataclass(frozen=True)
class Outbound:
    """The outbox rows a batch wrote under a lease, in order, for its relay once committed."""

    rows: list[dict[str, Any]]
    ids: list[int]


@dataclass
class NewMessage:
    view: MessageView
    conv: ConversationState

    @property
    def conv_participants(self) -> list[uuid.UUID]:
        return participants(self.conv, also=self.view.sender_id)


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
        lease: timedelta,
    ) -> None:
        self.rows = rows
        self.lease = lease
        self.admin_scope = admin_scope
        self.reopen_on_user_message = reopen_on_user_message
        self.max_body_chars = max_body_chars
        self.flood_cap = flood_cap
        self._name_cache: dict[uuid.UUID, tuple[str, float]] = {}  # sender -> (name, expires)
        self._known: dict[uuid.UUID, tuple[ConversationState, int]] = {}  # conversation -> (state, version)

    async def write(
        self, pg: asyncpg.Connection, items: list[SendItem], now: datetime, *, lookup: bool = True
    ) -> tuple[list[SendResult | BaseException], Outbound | None]:
        """Lock, decide and write a batch inside the caller's transaction.

        ``lookup=False`` skips the search for earlier copies of each ``(sender, client_id)``: the
        unique index still refuses a copy, and the caller then retries the batch with the lookup.
        The outbox rows written are for the relay once the caller committed.
        """
        conv_ids = sorted({item.request.conversation_id for item in items})
        convs = {row["id"]: state_of_record(row) for row in await pg.fetch(LOCK_CONVERSATIONS, conv_ids)}
        existing: dict[tuple[uuid.UUID, str], MessageView] = {}
        if lookup:
            found = await pg.fetch(
                EXISTING,
                [item.actor.user_id for item in items],
                [item.request.client_id for item in items],
            )
            existing = {(row["sender_id"], row["client_id"]): message_view_of_record(row) for row in found}
        outcomes, created, previews = self._decide_all(items, convs, existing, now)
        if not created:
            return outcomes, None
        return outcomes, await self._persist(pg, created, convs, previews, now)

    async def write_if_unchanged(
        self, pg: asyncpg.Connection, items: list[SendItem], now: datetime
    ) -> tuple[list[SendResult | BaseException], Outbound] | None:
        """The fast path, in one autocommit statement on a connection outside any transaction.

        None when nothing was written: a conversation this process does not know, one changed since
        (another replica's send, a read receipt), or a batch with nothing to write. The caller then
        takes the locked path, which decides again on the rows as they are.
        """
        convs: dict[uuid.UUID, ConversationState] = {}
        versions: dict[uuid.UUID, int] = {}
        for item in items:
            conv_id = item.request.conversation_id
            if conv_id in convs:
                continue
            known = self._known.get(conv_id)
            if known is None:
                SEND_PATH.labels("unknown").inc()
                return None
            convs[conv_id] = replace(known[0], new_seqs=[])
            versions[conv_id] = known[1]
        # No lookup of earlier copies: the unique index refuses a copy and the caller looks then.
        outcomes, created, previews = self._decide_all(items, convs, {}, now)
        if not created:
            SEND_PATH.labels("refused").inc()
            return None
        ids = sorted(versions)
        unchanged = (ids, [versions[i] for i in ids])
        outbound = await self._persist(pg, created, convs, previews, now, unchanged=unchanged)
        if outbound is None:
            for conv_id in ids:
                self._known.pop(conv_id, None)
            SEND_PATH.labels("stale").inc()
            return None
        SEND_PATH.labels("unchanged").inc()
        return outcomes, outbound

    def remember(self, row: Mapping[Any, Any]) -> None:
        """A conversation row this process just wrote and committed (``RETURNING_STATE``): the
        next send to it can take the fast path."""
        self._remember(state_of_record(row), row["version"])

    def _remember(self, conv: ConversationState, version: int) -> None:
        if len(self._known) > KNOWN_MAX:
            self._known.clear()
        self._known[conv.id] = (replace(conv, new_seqs=[], reopened=False), version)

    def forget(self, conv_id: uuid.UUID) -> None:
        """This process changed the row elsewhere: the next send takes the locked path at once."""
        self._known.pop(conv_id, None)

    def _decide_all(
        self,
        items: list[SendItem],
        convs: dict[uuid.UUID, ConversationState],
        existing: dict[tuple[uuid.UUID, str], MessageView],
        now: datetime,
    ) -> tuple[list[SendResult | BaseException], list[NewMessage], dict[uuid.UUID, str]]:
        outcomes: list[SendResult | BaseException] = []
        created: list[NewMessage] = []
        previews: dict[uuid.UUID, str] = {}
        for item in items:
            try:
                outcomes.append(self._decide(item, convs, existing, created, previews, now))
            except DomainError as exc:
                outcomes.append(exc)
        return outcomes, created, previews

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
        pg: asyncpg.Connection,
        created: list[NewMessage],
        convs: dict[uuid.UUID, ConversationState],
        previews: dict[uuid.UUID, str],
        now: datetime,
        *,
        unchanged: tuple[list[uuid.UUID], list[int]] | None = None,
    ) -> Outbound | None:
        """Write the batch; with ``unchanged`` (ids and versions) only if no row moved (else None)."""
        touched = [conv for conv in convs.values() if conv.new_seqs]
        names = await self._names(pg, {new.view.sender_id for new in created})
        outbox: list[dict[str, Any]] = []
        deliveries: list[Delivery] = []
        for conv in touched:
            if conv.reopened:
                payload = _payload(conv)
                outbox.append(self.rows.event(ConversationUpdated(payload=payload)))
                frame = conversation_frame(payload).decode()
                deliveries.append(Delivery([str(u) for u in participants(conv)], frame))
        events = [row for new in created for row in self.message_events(new, names)]
        deliveries.extend(self.message_delivery(new) for new in created)
        # Deliveries first: the relay publishes in id order, and the people waiting are the recipients.
        # Events grouped by type (stable, so each type keeps message order), written as packs.
        events.sort(key=lambda row: str(row["routing_key"]))
        outbox = [*bundles(self.rows.delivery_exchange, deliveries), *outbox, *self.rows.packed(events)]
        views = [new.view for new in created]
        rows = await pg.fetch(
            WRITE_BATCH if unchanged is None else WRITE_BATCH_IF_UNCHANGED,
            [v.message_id for v in views],
            [v.conversation_id for v in views],
            [v.seq for v in views],
            [v.sender_id for v in views],
            [v.client_id for v in views],
            [v.body for v in views],
            now,
            [c.id for c in touched],
            [c.last_seq for c in touched],
            [c.status for c in touched],
            [previews[c.id] for c in touched],
            [c.user_read_seq for c in touched],
            [c.admin_read_seq for c in touched],
            [c.user_unread for c in touched],
            [c.admin_unread for c in touched],
            [c.flood_window_start for c in touched],
            [c.flood_count for c in touched],
            *outbox_columns(outbox),
            now + self.lease,
            *(unchanged or ()),
        )
        if not rows:
            return None  # only a guarded write comes back empty: something moved, nothing written
        # Every column the rules read was just written, so the state is the row: remember it and its
        # new version. (Inside a transaction that may still roll back, a version that never commits
        # only costs one failed fast attempt.)
        for row in rows:
            self._remember(convs[row["id"]], row["version"])
        return Outbound(outbox, list(rows[0]["outbox_ids"]))

    async def _names(self, pg: asyncpg.Connection, senders: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Display names for ``message.unread``, cached briefly: they rarely change, sends are hot."""
        now = time.monotonic()
        missing = [s for s in senders if self._name_cache.get(s, ("", 0.0))[1] <= now]
        if missing:
            found = {row["user_id"]: row["name"] for row in await pg.fetch(NAMES, missing)}
            if len(self._name_cache) > 50_000:
                self._name_cache.clear()
            for sender in missing:
                self._name_cache[sender] = (found.get(sender, ""), now + NAME_TTL_S)
        return {s: self._name_cache[s][0] for s in senders if self._name_cache[s][0]}

    def message_rows(self, new: NewMessage, names: dict[uuid.UUID, str]) -> list[dict[str, Any]]:
        """A lone message's outbox rows: its delivery and its events."""
        delivery = self.message_delivery(new)
        row = self.rows.delivery(
            delivery.frame.encode(), new.conv_participants, conversation_id=new.conv.id, seq=new.view.seq
        )
        return [row, *self.message_events(new, names)]

    def message_delivery(self, new: NewMessage) -> Delivery:
        """``message.new`` for every participant and a supervising sender (their other devices)."""
        view = new.view
        return Delivery(
            [str(u) for u in new.conv_participants],
            message_frame("message.new", view).decode(),
            str(view.conversation_id),
            view.seq,
        )

    def message_events(self, new: NewMessage, names: dict[uuid.UUID, str]) -> list[dict[str, Any]]:
        view = new.view
        rows = [self.rows.event(MessageCreated(payload=message_payload(view)))]
        for recipient in new.conv_participants:
            if recipient == view.sender_id:
                continue
            rows.append(
                self.rows.event(
                    MessageUnread(
                        payload=MessageUnreadPayload(
                            recipient_id=recipient,
                            message_id=view.message_id,
                            conversation_id=view.conversation_id,
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
