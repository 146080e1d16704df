"""The small interfaces the use cases need from the outside world, and how failures are told apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class SendError(Exception):
    """A provider refused or could not take the message."""


class TransientSendError(SendError):
    """Worth retrying: SMTP 4xx, connection errors, throttling, HTTP 429/5xx."""


class PermanentSendError(SendError):
    """Never retried: SMTP 5xx, invalid number, bad credentials."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None
    message_id: str  # fixed per notification, so a resend is recognisable as the same mail
    date: datetime
    unsubscribe: str | None = None


@dataclass(frozen=True)
class OutgoingSms:
    to: str  # E.164
    text: str
    reference: str  # our notification id, passed to the provider as client reference


class EmailSender(Protocol):
    async def send(self, email: OutgoingEmail) -> str:
        """Hand the email to the server; returns a provider id. Raises a ``SendError``."""
        ...


class SmsSender(Protocol):
    async def send(self, sms: OutgoingSms) -> str:
        """Hand the SMS to the provider; returns its message id. Raises a ``SendError``."""
        ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    return datetime.now(UTC)
