"""SMTP sessions are reused across mails, replaced when the server dropped them, and retired."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.notifier.adapters.email import SmtpEmailSender
from services.notifier.service_layer.ports import OutgoingEmail
from services.notifier.settings import NotifierSettings
from tests.support.smtp import free_port


class SessionLog:
    """Which connection carried each accepted mail."""

    def __init__(self) -> None:
        self.mails: list[tuple[int, str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mails.append((id(session), envelope.rcpt_tos[0]))
        return "250 OK"

    def sessions(self) -> int:
        return len({s for s, _ in self.mails})


@pytest.fixture
def server() -> Iterator[tuple[Controller, SessionLog]]:
    log = SessionLog()
    controller = Controller(log, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, log
    finally:
        controller.stop()


def mail(to: str) -> OutgoingEmail:
    return OutgoingEmail(
        to=to,
        subject="1 new message",
        text="hello",
        html=None,
        message_id=f"<{uuid.uuid4()}@chat.test>",
        date=datetime.now(UTC),
    )


def sender(controller: Controller, **overrides: Any) -> SmtpEmailSender:
    return SmtpEmailSender(NotifierSettings(smtp_host="127.0.0.1", smtp_port=controller.port, **overrides))


async def test_consecutive_mails_share_one_session(server: tuple[Controller, SessionLog]) -> None:
    controller, log = server
    smtp = sender(controller)
    for n in range(5):
        message = mail(f"r{n}@example.test")
        assert await smtp.send(message) == message.message_id
    await smtp.close()
    assert [to for _, to in log.mails] == [f"r{n}@example.test" for n in range(5)]
    assert log.sessions() == 1


async def test_a_session_is_retired_after_its_maximum_number_of_mails(
    server: tuple[Controller, SessionLog],
) -> None:
    controller, log = server
    smtp = sender(controller, smtp_max_messages_per_session=2)
    for n in range(5):
        await smtp.send(mail(f"r{n}@example.test"))
    await smtp.close()
    assert len(log.mails) == 5 and log.sessions() == 3


async def test_a_session_the_server_dropped_while_idle_is_replaced_without_a_failed_attempt() -> None:
    log = SessionLog()
    first = Controller(log, hostname="127.0.0.1", port=free_port())
    first.start()
    smtp = sender(first, smtp_timeout_s=5)
    await smtp.send(mail("first@example.test"))
    # The server goes away and comes back on the same port: the pooled session is dead.
    first.stop()
    again = Controller(log, hostname="127.0.0.1", port=first.port)
    again.start()
    try:
        await smtp.send(mail("second@example.test"))  # nothing had been sent on the dead one
        await smtp.close()
    finally:
        again.stop()
    assert [to for _, to in log.mails] == ["first@example.test", "second@example.test"]
    assert log.sessions() == 2
