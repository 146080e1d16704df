"""Plain values the rules decide on: who the recipient is, where they are, what is unread."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Channel = Literal["email", "sms"]
SuppressReason = Literal["read", "deleted", "preference", "unknown_recipient", "silenced"]
DeferReason = Literal["active", "cooldown", "quiet_hours", "unknown_recipient"]


@dataclass(frozen=True)
class Window:
    """How long an unread message waits for its recipient before anyone is told."""

    grace: timedelta
    max_window: timedelta  # a steady trickle of messages cannot postpone the digest past this
    settle: timedelta  # NOTIFIER_SETTLE_S

    def ends(self, *, sent_at: datetime, now: datetime) -> datetime:
        """The end of a message's grace, counted from its send as the recipient lives it (the
        time it took to reach us is not added), but never sooner than ``settle`` (at most the
        grace) after we hear of it: after a backlog, a read receipt queued right behind the
        message still lands first. A sender's clock ahead of ours counts as now."""
        return max(min(sent_at, now) + self.grace, now + min(self.settle, self.grace))

    def due(
        self, *, current: datetime | None, opened_at: datetime | None, sent_at: datetime, now: datetime
    ) -> datetime:
        """When a thread falls due after one more unread message: that message's grace end, or,
        for a window already open (due at ``current``), extended to it but never past the
        maximum window (a deferral already further out stays as it is)."""
        ends = self.ends(sent_at=sent_at, now=now)
        if current is None:
            return ends
        return max(current, min(ends, (opened_at or now) + self.max_window))


@dataclass(frozen=True)
class Recipient:
    user_id: uuid.UUID
    display_name: str
    role: str = "USER"
    email: str | None = None  # verified only
    phone: str | None = None  # verified only, E.164
    email_enabled: bool = True
    sms_enabled: bool = False
    quiet_start: str | None = None  # "22:00" local
    quiet_end: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class Presence:
    state: str  # active | idle | offline
    last_seen: datetime


@dataclass(frozen=True)
class UnreadMessage:
    seq: int
    sender_id: uuid.UUID
    sender_name: str | None
    body: str
    created_at: datetime
    deleted: bool = False


@dataclass(frozen=True)
class Thread:
    """One (recipient, conversation) pair: read position, escalation and what is still unread."""

    recipient_id: uuid.UUID
    conversation_id: uuid.UUID
    read_seq: int = 0
    last_notified_at: datetime | None = None
    cooldown_level: int = 0  # notifications sent since the last reset
    unread: tuple[UnreadMessage, ...] = ()
    opened_at: datetime | None = None  # when the current pending window opened
    notified_seq: int = 0  # highest seq a notification already covered
    silence_until_read: bool = False

    def visible_unread(self) -> tuple[UnreadMessage, ...]:
        return tuple(m for m in self.unread if m.seq > self.read_seq and not m.deleted)


@dataclass(frozen=True)
class Policy:
    idle_after: timedelta = timedelta(minutes=5)
    presence_stale: timedelta = timedelta(minutes=15)
    active_recheck: timedelta = timedelta(minutes=1)
    cooldowns: tuple[timedelta, ...] = (timedelta(minutes=10), timedelta(hours=1), timedelta(hours=24))
    cooldown_reset: timedelta = timedelta(hours=48)
    # A message can overtake its recipient's user.registered; wait for it this long, then give up.
    unknown_recipient_retry: timedelta = timedelta(seconds=30)
    unknown_recipient_give_up: timedelta = timedelta(hours=1)
    channels: dict[str, tuple[Channel, ...]] = field(
        default_factory=lambda: {"USER": ("email", "sms"), "ADMIN": ("email",)}
    )
    fallback: dict[str, bool] = field(default_factory=lambda: {"USER": True, "ADMIN": True})


@dataclass(frozen=True)
class Send:
    channel: Channel
    destination: str
    messages: tuple[UnreadMessage, ...]


@dataclass(frozen=True)
class Suppress:
    reason: SuppressReason


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: DeferReason


Decision = Send | Suppress | Defer
