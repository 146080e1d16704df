"""A real SMTP server (aiosmtpd) on loopback that keeps what it received for assertions."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""


@dataclass
class SmtpSink:
    """Collects messages; ``fail_next`` lets a test answer the next DATA with an SMTP error."""

    messages: list[Received] = field(default_factory=list)
    fail_next: list[str] = field(default_factory=list)
    _arrived: asyncio.Condition | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_next:
            return self.fail_next.pop(0)
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    async def wait_for(self, count: int, *, to: str | None = None, timeout: float = 10.0) -> list[Received]:
        async def poll() -> list[Received]:
            while True:
                found = self.to(to) if to else self.messages
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.sink = SmtpSink()
        self._controller: Any = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
