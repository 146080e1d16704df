"""Every event that crosses a service boundary, typed and versioned, in one catalogue.

An event is an envelope (``id``, ``type``, ``version``, ``occurred_at``,
``correlation_id``) around a typed ``payload``. The AMQP routing key of an
event is its ``type``. Past tense for facts; commands live in ``shared.commands``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Role = Literal["USER", "ADMIN"]
PresenceState = Literal["active", "idle", "offline"]
ConversationStatus = Literal["OPEN", "PENDING", "CLOSED"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventBase(BaseModel):
    """Envelope shared by every event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: uuid.UUID | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


# --- user.* (auth) ---------------------------------------------------------


class NotificationPreferences(Payload):
    email_enabled: bool = True
    sms_enabled: bool = False
    quiet_hours_start: str | None = None  # "22:00", local to ``timezone``
    quiet_hours_end: str | None = None  # "07:00"
    timezone: str = "UTC"


class UserPayload(Payload):
    user_id: uuid.UUID
    username: str
    display_name: str | None = None
    email: str | None = None  # only when verified
    phone: str | None = None  # E.164, only when verified
    role: Role = "USER"
    preferences: NotificationPreferences = NotificationPreferences()


class UserRegistered(EventBase):
    type: Literal["user.registered"] = "user.registered"
    version: Literal[1] = 1
    payload: UserPayload


class UserUpdated(EventBase):
    type: Literal["user.updated"] = "user.updated"
    version: Literal[1] = 1
    payload: UserPayload


class OtpRequestedPayload(Payload):
    user_id: uuid.UUID
    phone: str  # E.164; the code and the phone never reach a log
    code: str
    expires_at: datetime


class OtpRequested(EventBase):
    type: Literal["otp.requested"] = "otp.requested"
    version: Literal[1] = 1
    payload: OtpRequestedPayload


class AccountEmailPayload(Payload):
    user_id: uuid.UUID
    email: str
    link: str
    expires_at: datetime


class EmailVerificationRequested(EventBase):
    type: Literal["email.verification_requested"] = "email.verification_requested"
    version: Literal[1] = 1
    payload: AccountEmailPayload


class PasswordResetRequested(EventBase):
    type: Literal["password.reset_requested"] = "password.reset_requested"
    version: Literal[1] = 1
    payload: AccountEmailPayload


# --- conversation.* and message.* (store) ----------------------------------


class ConversationPayload(Payload):
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    admin_id: uuid.UUID | None
    subject: str
    status: ConversationStatus
    last_seq: int = 0


class ConversationCreated(EventBase):
    type: Literal["conversation.created"] = "conversation.created"
    version: Literal[1] = 1
    payload: ConversationPayload


class ConversationUpdated(EventBase):
    type: Literal["conversation.updated"] = "conversation.updated"
    version: Literal[1] = 1
    payload: ConversationPayload


class MessagePayload(Payload):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    client_id: str
    body: str
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None


class MessageCreated(EventBase):
    type: Literal["message.created"] = "message.created"
    version: Literal[1] = 1
    payload: MessagePayload


class MessageUpdated(EventBase):
    type: Literal["message.updated"] = "message.updated"
    version: Literal[1] = 1
    payload: MessagePayload


class MessageUnreadPayload(Payload):
    recipient_id: uuid.UUID
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    sender_id: uuid.UUID
    sender_name: str | None = None
    body: str
    created_at: datetime


class MessageUnread(EventBase):
    """A new message its recipient has not seen yet: the notifier's input."""

    type: Literal["message.unread"] = "message.unread"
    version: Literal[1] = 1
    payload: MessageUnreadPayload


class MessageReadPayload(Payload):
    conversation_id: uuid.UUID
    reader_id: uuid.UUID
    seq: int


class MessageRead(EventBase):
    type: Literal["message.read"] = "message.read"
    version: Literal[1] = 1
    payload: MessageReadPayload


# --- presence.* (gateway) --------------------------------------------------


class PresencePayload(Payload):
    user_id: uuid.UUID
    state: PresenceState
    last_seen: datetime
    connections: int = 0


class PresenceChanged(EventBase):
    type: Literal["presence.changed"] = "presence.changed"
    version: Literal[1] = 1
    payload: PresencePayload


Event = Annotated[
    UserRegistered
    | UserUpdated
    | OtpRequested
    | EmailVerificationRequested
    | PasswordResetRequested
    | ConversationCreated
    | ConversationUpdated
    | MessageCreated
    | MessageUpdated
    | MessageUnread
    | MessageRead
    | PresenceChanged,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[type[EventBase], ...] = (
    UserRegistered,
    UserUpdated,
    OtpRequested,
    EmailVerificationRequested,
    PasswordResetRequested,
    ConversationCreated,
    ConversationUpdated,
    MessageCreated,
    MessageUpdated,
    MessageUnread,
    MessageRead,
    PresenceChanged,
)

_event_adapter: TypeAdapter[Any] = TypeAdapter(Event)

E = TypeVar("E", bound=EventBase)


def parse_event(raw: bytes | str) -> EventBase:
    """Decode any catalogued event; raises ``pydantic.ValidationError`` on anything else."""
    event: EventBase = _event_adapter.validate_json(raw)
    return event


_pack_adapter: TypeAdapter[list[Any]] = TypeAdapter(list[Event])


def parse_event_pack(raw: bytes | str) -> list[EventBase]:
    """Decode a JSON array of catalogued events (``shared.messaging.packing``); all or nothing."""
    events: list[EventBase] = _pack_adapter.validate_json(raw)
    return events


def event_type_name(cls: type[EventBase]) -> str:
    """The routing key of an event class (its ``type`` default)."""
    default = cls.model_fields["type"].default
    assert isinstance(default, str)
    return default
