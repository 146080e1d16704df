"""What a notification says: digest email and SMS, OTP SMS and account emails."""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.notifier.domain.model import UnreadMessage

SNIPPET_CHARS = 140


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None


def conversation_link(frontend_url: str, conversation_id: uuid.UUID) -> str:
    return f"{frontend_url.rstrip('/')}/conversations/{conversation_id}"


def first_line(body: str, limit: int = SNIPPET_CHARS) -> str:
    """The first non-empty line, shortened to ``limit`` characters."""
    line = next((part.strip() for part in body.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _senders(messages: Sequence[UnreadMessage]) -> list[str]:
    names: list[str] = []
    for message in messages:
        name = message.sender_name or "Someone"
        if name not in names:
            names.append(name)
    return names


def _count(n: int) -> str:
    return f"{n} new message" + ("" if n == 1 else "s")


def render_digest_email(
    *,
    recipient_name: str,
    messages: Sequence[UnreadMessage],
    link: str,
    unsubscribe: str,
    max_items: int = 10,
) -> Rendered:
    """One email for every unread message of a conversation: count, sender, first lines, link."""
    senders = ", ".join(_senders(messages))
    subject = f"{_count(len(messages))} from {senders}"
    shown = list(messages)[:max_items]
    more = len(messages) - len(shown)
    lines = [f"Hello {recipient_name},", "", f"You have {_count(len(messages))} from {senders}:", ""]
    lines += [f"- {m.sender_name or 'Someone'}: {first_line(m.body)}" for m in shown]
    if more:
        lines.append(f"… and {more} more")
    lines += ["", f"Open the conversation: {link}", "", f"Notification settings: {unsubscribe}"]
    items = "".join(
        f"<li><strong>{html.escape(m.sender_name or 'Someone')}</strong>: "
        f"{html.escape(first_line(m.body))}</li>"
        for m in shown
    )
    if more:
        items += f"<li>… and {more} more</li>"
    body_html = (
        f"<p>Hello {html.escape(recipient_name)},</p>"
        f"<p>You have {_count(len(messages))} from {html.escape(senders)}:</p>"
        f"<ul>{items}</ul>"
        f'<p><a href="{html.escape(link, quote=True)}">Open the conversation</a></p>'
        f'<p style="font-size:small"><a href="{html.escape(unsubscribe, quote=True)}">'
        "Notification settings</a></p>"
    )
    return Rendered(subject, "\n".join(lines) + "\n", body_html)


def render_digest_sms(*, messages: Sequence[UnreadMessage], link: str) -> str:
    """A short SMS: count, who, and the link (no message text: SMS is not private)."""
    senders = _senders(messages)
    who = senders[0] if len(senders) == 1 else f"{senders[0]} and others"
    return f"{_count(len(messages))} from {who}. Open: {link}"


def render_otp_sms(*, code: str, expires_at: datetime, now: datetime) -> str:
    minutes = max(1, round((expires_at - now).total_seconds() / 60))
    return f"Your verification code is {code}. It expires in {minutes} min. Never share it."


def render_account_email(*, kind: str, link: str, expires_at: datetime) -> Rendered:
    """Verification and password-reset emails: one link, its expiry, nothing else."""
    if kind == "email_verification":
        subject, action = "Confirm your email address", "confirm your email address"
    else:
        subject, action = "Reset your password", "choose a new password"
    until = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"Hello,\n\nFollow this link to {action}:\n{link}\n\n"
        f"The link works until {until}. If you did not ask for this, ignore this email.\n"
    )
    body_html = (
        f"<p>Hello,</p><p>Follow this link to {action}:</p>"
        f'<p><a href="{html.escape(link, quote=True)}">{html.escape(link)}</a></p>'
        f"<p>The link works until {until}. If you did not ask for this, ignore this email.</p>"
    )
    return Rendered(subject, text, body_html)
