"""Email over SMTP with aiosmtplib: plain text + HTML, fixed Message-ID, transient vs permanent errors."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import aiosmtplib

from services.notifier.service_layer.ports import (
    OutgoingEmail,
    PermanentSendError,
    TransientSendError,
)
from services.notifier.settings import NotifierSettings


def build_message(mail: OutgoingEmail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = email.utils.format_datetime(mail.date)
    message["Message-ID"] = mail.message_id
    message["Auto-Submitted"] = "auto-generated"
    if mail.unsubscribe:
        message["List-Unsubscribe"] = f"<{mail.unsubscribe}>"
    message.set_content(mail.text)
    if mail.html:
        message.add_alternative(mail.html, subtype="html")
    return message


def _classify(code: int, text: str) -> TransientSendError | PermanentSendError:
    """A reply code is a clear refusal: the server did not take the message (never ambiguous)."""
    detail = f"SMTP {code} {text}".strip()[:300]
    if 400 <= code < 500:
        return TransientSendError(detail, ambiguous=False)
    return PermanentSendError(detail)


class SmtpEmailSender:
    """One SMTP session per email; the server's reply decides retry or not."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def send(self, mail: OutgoingEmail) -> str:
        s = self.settings
        message = build_message(mail, s.mail_from)
        try:
            await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                use_tls=s.smtp_security == "ssl",
                start_tls=s.smtp_security == "starttls",
                validate_certs=s.smtp_validate_certs,
                timeout=s.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            worst = max((r.code for r in exc.recipients), default=550)
            raise _classify(worst, "recipient refused") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermanentSendError(f"SMTP auth failed: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPConnectError, ConnectionRefusedError) as exc:
            # Never connected: nothing can have been sent.
            raise TransientSendError(f"SMTP unreachable: {type(exc).__name__}", ambiguous=False) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Dropped or timed out mid-session: the server may have taken the message.
            raise TransientSendError(f"SMTP unreachable: {type(exc).__name__}: {exc}"[:300]) from exc
        return mail.message_id
