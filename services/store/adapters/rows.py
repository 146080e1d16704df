"""Outbox rows the store writes: events for other services, frames for the gateways.

A delivery row is one publish reaching every participant: routed by the first
participant's key with the others in the ``CC`` header (RabbitMQ
sender-selected distribution). Its body is the WebSocket frame, encoded once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from sqlalchemy import Row, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.adapters.tables import outbox
from services.store.domain.rules import ConversationState
from shared.commands import (
    BUNDLE_MAX_KEYS,
    DELIVERY_BUNDLE_HEADER,
    DELIVERY_CONVERSATION_HEADER,
    DELIVERY_SEQ_HEADER,
    DELIVERY_TO_HEADER,
    ConversationView,
    Delivery,
    MessageView,
    encode_bundle,
    encode_frame,
    user_key,
)
from shared.events import ConversationPayload, EventBase, MessagePayload
from shared.messaging.packing import PACKED_HEADER, pack, runs
from shared.messaging.topology import Topology

OutboxValues = dict[str, Any]


class Rows:
    """Builds outbox rows for one topology."""

    def __init__(self, topology: Topology) -> None:
        self.events_exchange = topology.events_exchange
        self.delivery_exchange = topology.delivery_exchange

    def event(self, event: EventBase) -> OutboxValues:
        return {
            "exchange": self.events_exchange,
            "routing_key": event.type,  # type: ignore[attr-defined]
            "body": event.to_json(),
            "message_id": str(event.id),
            "persistent": True,
            "headers": None,
        }

    def packed(self, events: list[OutboxValues]) -> list[OutboxValues]:
        """Events as one row per run of a type, as the relay would publish them anyway
        (``shared.messaging.packing``): a batch writes and deletes two rows, not two per message.
        Each event keeps its id inside the pack."""
        out: list[OutboxValues] = []
        for run in runs(events, lambda row: row["routing_key"], lambda row: len(row["body"])):
            if len(run) == 1:
                out.append(run[0])
                continue
            out.append(
                {
                    **run[0],
                    "body": pack([row["body"] for row in run]),
                    "message_id": None,
                    "headers": {PACKED_HEADER: len(run)},
                }
            )
        return out

    def delivery(
        self,
        frame: bytes,
        to: Iterable[uuid.UUID],
        *,
        conversation_id: uuid.UUID | None = None,
        seq: int | None = None,
    ) -> OutboxValues:
        recipients = [str(u) for u in dict.fromkeys(to)]
        headers: dict[str, Any] = {DELIVERY_TO_HEADER: recipients}
        if len(recipients) > 1:
            headers["CC"] = [user_key(u) for u in recipients[1:]]
        if conversation_id is not None:
            headers[DELIVERY_CONVERSATION_HEADER] = str(conversation_id)
        if seq is not None:
            headers[DELIVERY_SEQ_HEADER] = seq
        # Gateway queues are transient; a lost frame is recovered by the client's resume.
        return {
            "exchange": self.delivery_exchange,
            "routing_key": user_key(recipients[0]),
            "body": frame,
            "message_id": None,
            "persistent": False,
            "headers": headers,
        }


def outbox_columns(rows: list[OutboxValues]) -> tuple[list[Any], ...]:
    """The rows as parallel arrays, for an ``INSERT … SELECT * FROM unnest(…)`` into the outbox."""
    return (
        [r["exchange"] for r in rows],
        [r["routing_key"] for r in rows],
        [r["body"] for r in rows],
        [r["message_id"] for r in rows],
        [r["persistent"] for r in rows],
        [None if r["headers"] is None else orjson.dumps(r["headers"]).decode() for r in rows],
    )


def bundles(self_exchange: str, deliveries: list[Delivery]) -> list[OutboxValues]:
    """Deliveries as few publishes as routing allows (see ``shared.commands.DELIVERY_BUNDLE_HEADER``)."""
    rows: list[OutboxValues] = []
    chunk: list[Delivery] = []
    keys: dict[str, None] = {}
    for delivery in deliveries:
        new = [user_key(u) for u in delivery.to if user_key(u) not in keys]
        if chunk and len(keys) + len(new) > BUNDLE_MAX_KEYS:
            rows.append(_bundle_row(self_exchange, chunk, list(keys)))
            chunk, keys = [], {}
            new = [user_key(u) for u in dict.fromkeys(delivery.to)]
        chunk.append(delivery)
        keys.update(dict.fromkeys(new))
    if chunk:
        rows.append(_bundle_row(self_exchange, chunk, list(keys)))
    return rows


def _bundle_row(exchange: str, chunk: list[Delivery], keys: list[str]) -> OutboxValues:
    headers: dict[str, Any] = {DELIVERY_BUNDLE_HEADER: 1}
    if len(keys) > 1:
        headers["CC"] = keys[1:]
    return {
        "exchange": exchange,
        "routing_key": keys[0],
        "body": encode_bundle(chunk),
        "message_id": None,
        "persistent": False,
        "headers": headers,
    }


async def write_outbox(conn: AsyncConnection, rows: list[OutboxValues]) -> None:
    """Insert the rows (one prepared statement, pipelined), inside the caller's transaction."""
    if rows:
        await conn.execute(insert(outbox), rows)


def message_view(row: Row[Any]) -> MessageView:
    return message_view_of_record(row._mapping)


def message_view_of_record(row: Mapping[Any, Any]) -> MessageView:
    """A message from a row by column name (SQLAlchemy mapping or asyncpg record)."""
    return MessageView(
        message_id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        client_id=row["client_id"],
        body=row["body"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
    )


def message_payload(view: MessageView) -> MessagePayload:
    return MessagePayload(**view.model_dump())


def conversation_frame(payload: ConversationPayload) -> bytes:
    """What both participants (and a former assignee) see of a conversation change."""
    return encode_frame("conversation.updated", payload.model_dump(mode="json"))


def state_of(row: Row[Any]) -> ConversationState:
    return state_of_record(row._mapping)


def state_of_record(row: Mapping[Any, Any]) -> ConversationState:
    return ConversationState(
        id=row["id"],
        user_id=row["user_id"],
        admin_id=row["admin_id"],
        status=row["status"],
        subject=row["subject"],
        last_seq=row["last_seq"],
        flood_window_start=row["flood_window_start"],
        flood_count=row["flood_count"],
        user_read_seq=row["user_read_seq"],
        admin_read_seq=row["admin_read_seq"],
        user_unread=row["user_unread"],
        admin_unread=row["admin_unread"],
    )


def conversation_view(row: Row[Any], me: uuid.UUID) -> ConversationView:
    """A conversation as one participant sees it (their read position and unread count)."""
    if me == row.user_id:
        read_seq, unread, other = row.user_read_seq, row.user_unread, row.admin_read_seq
    else:
        read_seq, unread, other = row.admin_read_seq, row.admin_unread, row.user_read_seq
    mapping = row._mapping
    return ConversationView(
        conversation_id=row.id,
        user_id=row.user_id,
        admin_id=row.admin_id,
        subject=row.subject,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_activity_at=row.last_activity_at,
        last_seq=row.last_seq,
        last_message_preview=row.last_message_preview,
        read_seq=read_seq,
        unread=unread,
        other_read_seq=other,
        counterpart_id=mapping.get("counterpart_id"),
        counterpart_name=mapping.get("counterpart_name"),
        counterpart_presence=mapping.get("counterpart_presence") or "offline",
    )
