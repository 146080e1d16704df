"""Email over SMTP with aiosmtplib: plain text + HTML, fixed Message-ID, transient vs permanent errors.

Sessions are kept open and reused: a new one costs a TCP connect, the greeting, EHLO (and TLS,
AUTH), several times the work of the mail itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from dataclasses import dataclass

import aiosmtplib

from services.notifier.adapters.mime import render_email
from services.notifier.service_layer.ports import (
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
)
from services.notifier.settings import NotifierSettings
from shared.logging import get_logger

log = get_logger(__name__)

QUIT_TIMEOUT_S = 2.0


def _classify(code: int, text: str) -> TransientSendError | PermanentSendError:
    """A reply code is a clear refusal: the server did not take the message (never ambiguous)."""
    detail = f"SMTP {code} {text}".strip()[:300]
    if 400 <= code < 500:
        return TransientSendError(detail, ambiguous=False)
    return PermanentSendError(detail)


@dataclass
class _Session:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


class _Stale(Exception):
    """A reused session turned out closed before any of the mail went out: open a new one."""


class SmtpEmailSender:
    """A small pool of open SMTP sessions; the server's reply decides retry or not.

    A session serves one mail at a time, goes back to the pool after a clean transaction (RSET
    after a refusal), is closed after any doubt about its state (timeout, dropped connection),
    after ``smtp_max_messages_per_session`` mails and when idle longer than ``smtp_idle_s``.
    A session the server closed while idle is noticed before the mail goes out (at MAIL FROM)
    and replaced once, so only a drop during DATA stays ambiguous.
    """

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.envelope_from = email.utils.parseaddr(settings.mail_from)[1] or settings.mail_from
        self._idle: list[_Session] = []
        self._local_hostname: str | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, mail: OutgoingEmail) -> str:
        message = render_email(mail, self.settings.mail_from)
        while True:
            session, reused = await self._acquire()
            try:
                await self._transact(session, message, self.envelope_from, mail.to, reused=reused)
            except _Stale:
                continue  # nothing was sent on it; a fresh session is tried (never stale itself)
            self._release(session)
            return mail.message_id

    async def close(self) -> None:
        """QUIT the idle sessions (bounded) and wait for those being retired."""
        idle, self._idle = self._idle, []
        for session in idle:
            self._retire(session)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=QUIT_TIMEOUT_S + 1)

    async def _transact(
        self, session: _Session, message: bytes, sender: str, to: str, *, reused: bool
    ) -> None:
        client = session.client
        data_sent = False
        try:
            options: list[str] = []
            encoding = "ascii"
            if not (sender + to).isascii():  # the body is 7-bit: only the addresses may need more
                if not client.supports_extension("smtputf8"):
                    raise PermanentSendError("SMTP server cannot take a non-ASCII address (no SMTPUTF8)")
                options.append("SMTPUTF8")
                encoding = "utf-8"
            await client.mail(sender, options=options, encoding=encoding)
            await client.rcpt(to, encoding=encoding)
            data_sent = True  # from here on a drop may come after the server took the mail
            await client.data(message)
            session.sent += 1
        except PermanentSendError:
            self._release(session)
            raise
        except aiosmtplib.SMTPResponseException as exc:
            # A reply: the server refused this mail and the session is still in step with us.
            await self._reset_or_drop(session)
            if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
                raise _classify(exc.code, "recipient refused") from exc
            raise _classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop(session)
            if data_sent:
                # Dropped or timed out during DATA: the server may have taken the message.
                raise TransientSendError(f"SMTP unreachable: {type(exc).__name__}: {exc}"[:300]) from exc
            if reused and isinstance(exc, ConnectionError):
                raise _Stale() from exc
            # Before DATA nothing of the mail was handed over: a clear outcome.
            raise TransientSendError(f"SMTP unreachable: {type(exc).__name__}", ambiguous=False) from exc
        except BaseException:
            self._drop(session)  # a bug or a cancellation mid-transaction: its state is unknown
            raise

    async def _acquire(self) -> tuple[_Session, bool]:
        """An idle session still worth using, else a new one (connect errors are clear outcomes)."""
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()
            if session.client.is_connected and now - session.idle_since < self.settings.smtp_idle_s:
                return session, True
            self._retire(session)
        return _Session(await self._connect()), False

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        if self._local_hostname is None:
            # aiosmtplib would look it up (in a thread) for every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            use_tls=s.smtp_security == "ssl",
            start_tls=s.smtp_security == "starttls",
            validate_certs=s.smtp_validate_certs,
            timeout=s.smtp_timeout_s,
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise PermanentSendError(f"SMTP auth failed: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Never got as far as a mail: nothing can have been sent.
            client.close()
            raise TransientSendError(f"SMTP unreachable: {type(exc).__name__}", ambiguous=False) from exc
        except BaseException:
            client.close()
            raise
        return client

    def _release(self, session: _Session) -> None:
        full = len(self._idle) >= self.settings.send_concurrency
        if (
            not session.client.is_connected
            or full
            or session.sent >= self.settings.smtp_max_messages_per_session
        ):
            self._retire(session)
            return
        session.idle_since = time.monotonic()
        self._idle.append(session)

    async def _reset_or_drop(self, session: _Session) -> None:
        try:
            await session.client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._drop(session)
            return
        self._release(session)

    @staticmethod
    def _drop(session: _Session) -> None:
        """Its state is unknown: close without a goodbye."""
        session.client.close()

    def _retire(self, session: _Session) -> None:
        """Say QUIT in the background: the caller's mail must not wait for a goodbye."""
        if not session.client.is_connected:
            session.client.close()
            return
        task = asyncio.create_task(self._quit(session.client), name="smtp-quit")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit(timeout=QUIT_TIMEOUT_S)
        client.close()
