"""The small interfaces the use cases need from the outside world, and how failures are told apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class SendError(Exception):
    """A provider refused or could not take the message.

    ``ambiguous`` means the provider may have taken it all the same (a timeout or a dropped
    connection after the request went out, an HTTP 5xx, a partly sent SMS): such an outcome
    never triggers a fallback channel nor gives the cooldown back.
    """

    default_ambiguous = False

    def __init__(self, detail: str, *, ambiguous: bool | None = None) -> None:
        super().__init__(detail)
        self.ambiguous = self.default_ambiguous if ambiguous is None else ambiguous


class TransientSendError(SendError):
    """Worth retrying: SMTP 4xx, connection errors, throttling, HTTP 429/5xx (ambiguous unless said)."""

    default_ambiguous = True


class PermanentSendError(SendError):
    """Never retried: SMTP 5xx, invalid number, bad credentials (a clear refusal unless said)."""


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
