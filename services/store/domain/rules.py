"""Conversation and message rules as plain code: access, sequencing, idempotency, flood cap, reads.

No SQL, no broker: the repository loads state, these functions decide, the
repository writes what they decided, all in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Side = Literal["user", "admin"]
FLOOD_WINDOW = timedelta(minutes=1)
PREVIEW_CHARS = 120


class DomainError(Exception):
    """A rule said no; ``code`` is stable and reaches the client unchanged."""

    def __init__(self, code: str, message: str, status: int, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


def not_found(what: str = "conversation") -> DomainError:
    """Foreign and missing ids look the same: 404, never 403, never data."""
    return DomainError("not_found", f"{what} not found", 404)


@dataclass(frozen=True)
class Who:
    user_id: uuid.UUID
    is_admin: bool


@dataclass
class ConversationState:
    """What the rules need of a conversation row (locked by the caller when it will change)."""

    id: uuid.UUID
    user_id: uuid.UUID
    admin_id: uuid.UUID | None
    status: str
    subject: str = ""
    last_seq: int = 0
    flood_window_start: datetime | None = None
    flood_count: int = 0
    user_read_seq: int = 0
    admin_read_seq: int = 0
    user_unread: int = 0
    admin_unread: int = 0
    reopened: bool = False
    new_seqs: list[int] = field(default_factory=list)


def can_access(who: Who, conv: ConversationState, admin_scope: str) -> bool:
    """A user sees their own conversations; an admin those assigned to them, unassigned ones, or all."""
    if not who.is_admin:
        return conv.user_id == who.user_id
    return admin_scope == "all" or conv.admin_id is None or conv.admin_id == who.user_id


def side_of(who: Who, conv: ConversationState) -> Side | None:
    """Whose read position the asker moves: the user's, the assigned admin's, or nobody's."""
    if who.user_id == conv.user_id:
        return "user"
    if who.is_admin and conv.admin_id == who.user_id:
        return "admin"
    return None


def participants(conv: ConversationState, also: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Everyone who receives this conversation's live events (a supervising sender too)."""
    found = [conv.user_id]
    for extra in (conv.admin_id, also):
        if extra is not None and extra not in found:
            found.append(extra)
    return found


def check_body(body: str, max_chars: int) -> str:
    if not body.strip():
        raise DomainError("invalid_body", "message body is empty", 422)
    if len(body) > max_chars:
        raise DomainError("body_too_long", f"message body is over {max_chars} characters", 422)
    return body


def preview(body: str) -> str:
    return body if len(body) <= PREVIEW_CHARS else body[: PREVIEW_CHARS - 1] + "…"


def admit_flood(conv: ConversationState, now: datetime, cap: int) -> None:
    """Count one message in the conversation's per-minute window, or refuse it."""
    if conv.flood_window_start is None or now - conv.flood_window_start >= FLOOD_WINDOW:
        conv.flood_window_start = now
        conv.flood_count = 0
    if conv.flood_count >= cap:
        retry = FLOOD_WINDOW - (now - conv.flood_window_start)
        raise DomainError(
            "flood_limited",
            f"at most {cap} messages per minute in one conversation",
            429,
            retry_after_s=max(1, int(retry.total_seconds() + 0.999)),
        )
    conv.flood_count += 1


def admit_send(who: Who, conv: ConversationState, *, admin_scope: str, reopen_on_user_message: bool) -> None:
    """Membership and status checks for a new message; may reopen a closed consultation."""
    if not can_access(who, conv, admin_scope):
        raise not_found()
    if conv.status == "CLOSED":
        if who.is_admin or not reopen_on_user_message:
            raise DomainError("conversation_closed", "the consultation is closed", 409)
        conv.status = "OPEN"
        conv.reopened = True


def next_seq(conv: ConversationState) -> int:
    """Gapless: the caller holds the conversation row lock until commit."""
    conv.last_seq += 1
    conv.new_seqs.append(conv.last_seq)
    return conv.last_seq


def count_sent(who: Who, conv: ConversationState, seq: int) -> None:
    """A sender has read up to their own message; the other side has one more unread."""
    side = side_of(who, conv)
    if side == "user":
        conv.user_read_seq, conv.user_unread = seq, 0
        conv.admin_unread += 1
    elif side == "admin":
        conv.admin_read_seq, conv.admin_unread = seq, 0
        conv.user_unread += 1
    else:  # a supervising admin: both participants have something new
        conv.user_unread += 1
        conv.admin_unread += 1 if conv.admin_id is not None else 0


def read_target(current: int, requested: int, last_seq: int) -> int:
    """Read positions only move forward and never past the last message."""
    return max(current, min(requested, last_seq))


def status_change_allowed(who: Who, conv: ConversationState, new_status: str | None) -> None:
    if new_status is not None and not who.is_admin:
        raise DomainError("forbidden", "only administrators change a consultation's status", 403)


def reassign_allowed(who: Who) -> None:
    if not who.is_admin:
        raise DomainError("forbidden", "only administrators assign consultations", 403)


def inbox_allowed(who: Who, assignee: object, admin_scope: str) -> None:
    if not who.is_admin:
        raise DomainError("forbidden", "the inbox is for administrators", 403)
    if admin_scope != "all" and assignee not in ("me", "unassigned", who.user_id):
        raise DomainError("forbidden", "administrators see their own and unassigned consultations", 403)
