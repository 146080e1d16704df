"""The WebSocket frame protocol: client frames as typed models, with stable error codes.

Parsing never raises anything but ``FrameError``; the connection answers it
with an ``error`` frame and stays open.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class FrameError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str | None = Field(default=None, max_length=64)  # echoed in the ack / error


class SendFrame(Frame):
    type: Literal["message.send"]
    conversation_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1)


class EditFrame(Frame):
    type: Literal["message.edit"]
    message_id: uuid.UUID
    body: str = Field(min_length=1)


class DeleteFrame(Frame):
    type: Literal["message.delete"]
    message_id: uuid.UUID


class ReadFrame(Frame):
    type: Literal["read"]
    conversation_id: uuid.UUID
    seq: int = Field(ge=0)


class TypingFrame(Frame):
    type: Literal["typing"]
    conversation_id: uuid.UUID


class ActivityFrame(Frame):
    type: Literal["activity"]


class ResumeFrame(Frame):
    type: Literal["resume"]
    conversations: dict[uuid.UUID, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=500)


class RefreshFrame(Frame):
    type: Literal["auth.refresh"]
    token: str = Field(min_length=1, max_length=4096)


class PingFrame(Frame):
    type: Literal["ping"]


ClientFrame = Annotated[
    SendFrame
    | EditFrame
    | DeleteFrame
    | ReadFrame
    | TypingFrame
    | ActivityFrame
    | ResumeFrame
    | RefreshFrame
    | PingFrame,
    Field(discriminator="type"),
]
FRAME_TYPES = frozenset(
    [
        "message.send",
        "message.edit",
        "message.delete",
        "read",
        "typing",
        "activity",
        "resume",
        "auth.refresh",
        "ping",
    ]
)
_adapter: TypeAdapter[Any] = TypeAdapter(ClientFrame)


def parse_frame(raw: str | bytes, max_bytes: int) -> Frame:
    """Decode one client frame or raise ``FrameError`` with a stable code."""
    if len(raw) > max_bytes:
        raise FrameError("frame_too_large", f"frames are limited to {max_bytes} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError("bad_json", "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    ref = data.get("ref") if isinstance(data.get("ref"), str) else None
    frame_type = data.get("type")
    if not isinstance(frame_type, str) or frame_type not in FRAME_TYPES:
        raise FrameError("unknown_type", f"unknown frame type {str(frame_type)[:40]!r}", ref)
    try:
        frame: Frame = _adapter.validate_python(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "frame" for e in exc.errors())
        raise FrameError("invalid_frame", f"invalid: {fields}", ref) from None
    return frame


def error_frame(code: str, message: str, ref: str | None = None, **extra: Any) -> bytes:
    return orjson.dumps({"type": "error", "code": code, "message": message, "ref": ref, **extra})
