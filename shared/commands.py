"""The typed RPC contract between the gateway and the store, plus the frames both encode.

Each store method has a request model (``params``) and a response model
(``result``); ``METHODS`` maps the wire name to both, so the gateway and the
store can never disagree about a shape. The actor (who asks) travels next to
the params, taken by the gateway from a verified token, never from the client.

Frames the store builds for the delivery exchange are encoded here once per
message (``encode_frame``) and forwarded byte-for-byte by every gateway.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.events import ConversationStatus, PresenceState, Role

STORE = "store"
MAX_PAGE = 100


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Actor(Model):
    """Who is asking: from the verified access token."""

    user_id: uuid.UUID
    role: Role


# --- views (results) ---------------------------------------------------------


class MessageView(Model):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    client_id: str
    body: str  # "" once deleted
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None


class ConversationView(Model):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    admin_id: uuid.UUID | None
    subject: str
    status: ConversationStatus
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    last_seq: int
    last_message_preview: str | None = None
    read_seq: int = 0  # the asking participant's read position
    unread: int = 0  # the asking participant's unread count
    other_read_seq: int = 0  # the other side's read position (receipts)
    counterpart_id: uuid.UUID | None = None
    counterpart_name: str | None = None
    counterpart_presence: PresenceState = "offline"


# --- requests and responses, one pair per method ----------------------------


class OpenConversation(Model):
    subject: str = Field(min_length=1, max_length=200)
    body: str | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=64)


class OpenConversationResult(Model):
    conversation: ConversationView
    message: MessageView | None = None
    duplicate: bool = False


class ListConversations(Model):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    before: datetime | None = None  # last_activity_at cursor


class AdminInbox(Model):
    status: ConversationStatus | None = None
    assignee: Literal["me", "unassigned", "any"] | uuid.UUID = "me"
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    before: datetime | None = None


class ConversationList(Model):
    conversations: list[ConversationView]
    next_before: datetime | None = None


class GetConversation(Model):
    conversation_id: uuid.UUID


class UpdateConversation(Model):
    conversation_id: uuid.UUID
    status: ConversationStatus | None = None
    admin_id: uuid.UUID | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=200)


class SendMessage(Model):
    conversation_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1)


class SendResult(Model):
    message: MessageView
    duplicate: bool = False


class SendManyItem(Model):
    actor: Actor
    request: SendMessage


class SendMany(Model):
    """Several users' sends in one RPC message: the gateway batches under load, never a lone send."""

    items: list[SendManyItem] = Field(min_length=1, max_length=512)


class SendOutcome(Model):
    """One item's answer: ``result`` or ``error`` (``{code, message, status, ...}``)."""

    result: SendResult | None = None
    error: dict[str, Any] | None = None


class SendManyResult(Model):
    outcomes: list[SendOutcome]  # same order as the items


class EditMessage(Model):
    message_id: uuid.UUID
    body: str = Field(min_length=1)


class DeleteMessage(Model):
    message_id: uuid.UUID


class MessageResult(Model):
    message: MessageView


class History(Model):
    conversation_id: uuid.UUID
    before: int | None = Field(default=None, ge=1)  # seq cursor, exclusive
    after: int | None = Field(default=None, ge=0)  # seq cursor, exclusive
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


class HistoryPage(Model):
    messages: list[MessageView]  # ascending seq
    last_seq: int
    has_more: bool


class MarkRead(Model):
    conversation_id: uuid.UUID
    seq: int = Field(ge=0)


class ReadResult(Model):
    conversation_id: uuid.UUID
    read_seq: int
    unread: int


class Search(Model):
    query: str = Field(min_length=1, max_length=200)
    conversation_id: uuid.UUID | None = None
    limit: int = Field(default=20, ge=1, le=MAX_PAGE)


class SearchResult(Model):
    messages: list[MessageView]


class Sync(Model):
    """Resume: the last seq a client saw per conversation; the store answers the gap or 'reload'."""

    conversations: dict[uuid.UUID, int] = Field(max_length=500)
    max_replay: int = Field(default=200, ge=1, le=1000)


class SyncResult(Model):
    messages: list[MessageView]  # ascending (conversation, seq)
    reload: list[uuid.UUID]  # gaps too large to replay: fetch history instead
    not_found: list[uuid.UUID]


METHODS: dict[str, tuple[type[Model], type[Model]]] = {
    "conversation.open": (OpenConversation, OpenConversationResult),
    "conversation.list": (ListConversations, ConversationList),
    "conversation.inbox": (AdminInbox, ConversationList),
    "conversation.get": (GetConversation, ConversationView),
    "conversation.update": (UpdateConversation, ConversationView),
    "message.send": (SendMessage, SendResult),
    "message.send_many": (SendMany, SendManyResult),
    "message.edit": (EditMessage, MessageResult),
    "message.delete": (DeleteMessage, MessageResult),
    "message.history": (History, HistoryPage),
    "message.read": (MarkRead, ReadResult),
    "message.search": (Search, SearchResult),
    "sync": (Sync, SyncResult),
}


# --- frames shared by store (delivery) and gateway (WebSocket) -------------

DELIVERY_TO_HEADER = "to"  # recipient user ids (str) of a delivery message
DELIVERY_CONVERSATION_HEADER = "c"  # conversation id of an ordered frame
DELIVERY_SEQ_HEADER = "s"  # seq of a message.new frame: gateways keep per-connection order with it
# A bundle carries many frames in one publish (the frames of one group commit): its body is
# ``[[to, conversation, seq, frame], …]`` and its CC names every recipient's key, so each gateway
# queue holding any of them gets the bundle once. Under load this is one publish and one consume
# per transaction instead of one per message.
DELIVERY_BUNDLE_HEADER = "b"
BUNDLE_MAX_KEYS = 200  # routing keys per bundle: AMQP headers must fit in one frame


@dataclass(frozen=True, slots=True)
class Delivery:
    """One frame for some users; ``conversation``/``seq`` make it an ordered ``message.new``."""

    to: list[str]
    frame: str
    conversation: str | None = None
    seq: int | None = None


def encode_bundle(deliveries: list[Delivery]) -> bytes:
    return orjson.dumps([[d.to, d.conversation, d.seq, d.frame] for d in deliveries])


def decode_bundle(body: bytes) -> list[Delivery]:
    """Raises ``ValueError`` on a malformed body (``orjson.JSONDecodeError`` is one)."""
    out = []
    for entry in orjson.loads(body):
        to, conversation, seq, frame = entry
        if not isinstance(to, list) or not isinstance(frame, str):
            raise ValueError("malformed bundle entry")
        out.append(Delivery([str(u) for u in to], frame, conversation, seq if isinstance(seq, int) else None))
    return out


def encode_frame(frame_type: str, data: dict[str, Any]) -> bytes:
    """One JSON frame; ``data`` must already be JSON-ready (``model_dump(mode="json")``)."""
    return orjson.dumps({"type": frame_type, **data})


def message_frame(frame_type: str, message: MessageView) -> bytes:
    return encode_frame(frame_type, message.model_dump(mode="json"))


def user_key(user_id: uuid.UUID | str) -> str:
    """Routing key of a user's deliveries on the delivery exchange."""
    return f"user.{user_id}"
