"""Unit tests of what notifications say and how the email is built."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from services.notifier.adapters.mime import BadHeader, render_email
from services.notifier.domain.digest import (
    conversation_link,
    first_line,
    render_account_email,
    render_digest_email,
    render_digest_sms,
    render_otp_sms,
)
from services.notifier.domain.model import UnreadMessage
from services.notifier.service_layer.ports import OutgoingEmail

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def msg(seq: int, body: str, sender: str | None = "Adam") -> UnreadMessage:
    return UnreadMessage(seq, uuid.uuid4(), sender, body, AT)


def test_the_digest_has_count_sender_first_lines_and_link() -> None:
    link = conversation_link("https://chat.example/", uuid.UUID(int=1))
    assert link == "https://chat.example/conversations/00000000-0000-0000-0000-000000000001"
    out = render_digest_email(
        recipient_name="Rita",
        messages=[msg(1, "Hello\nsecond line"), msg(2, "\n  Are you there?")],
        link=link,
        unsubscribe="https://chat.example/settings",
    )
    assert out.subject == "2 new messages from Adam"
    assert "- Adam: Hello" in out.text and "second line" not in out.text
    assert "- Adam: Are you there?" in out.text
    assert link in out.text and link in (out.html or "")


def test_the_digest_escapes_html_and_shortens_long_lines() -> None:
    out = render_digest_email(
        recipient_name="<Rita>",
        messages=[msg(1, "<script>alert(1)</script>", sender="Eve & Co")],
        link="https://chat.example/c",
        unsubscribe="https://chat.example/s",
    )
    assert "<script>" not in (out.html or "") and "&lt;script&gt;" in (out.html or "")
    assert "Eve &amp; Co" in (out.html or "")
    assert len(first_line("x" * 500)) == 140


def test_a_long_digest_lists_the_first_items_and_counts_the_rest() -> None:
    out = render_digest_email(
        recipient_name="Rita",
        messages=[msg(i, f"m{i}") for i in range(1, 26)],
        link="https://c",
        unsubscribe="https://u",
        max_items=20,
    )
    assert "- Adam: m20" in out.text and "- Adam: m21" not in out.text
    assert "and 5 more" in out.text
    assert out.subject.startswith("25 new messages")


def test_several_senders_are_named_once_each() -> None:
    out = render_digest_email(
        recipient_name="Rita",
        messages=[msg(1, "a", "Adam"), msg(2, "b", "Bea"), msg(3, "c", "Adam"), msg(4, "d", None)],
        link="https://c",
        unsubscribe="https://u",
    )
    assert out.subject == "4 new messages from Adam, Bea, Someone"


def test_the_digest_sms_is_short_and_never_quotes_the_messages() -> None:
    text = render_digest_sms(messages=[msg(1, "secret"), msg(2, "more", "Bea")], link="https://c/1")
    assert text == "2 new messages from Adam and others. Open: https://c/1"


def test_the_otp_sms_carries_the_code_and_its_lifetime() -> None:
    text = render_otp_sms(code="123456", expires_at=AT + timedelta(minutes=5), now=AT)
    assert "123456" in text and "5 min" in text


def test_account_emails_carry_the_link_and_expiry() -> None:
    out = render_account_email(kind="password_reset", link="https://c/reset?t=1", expires_at=AT)
    assert out.subject == "Reset your password"
    assert "https://c/reset?t=1" in out.text and "2026-06-15 12:00 UTC" in out.text


def parsed(mail: OutgoingEmail, sender: str = "Chat <no-reply@chat.example>") -> EmailMessage:
    """What a receiving mail system reads from the bytes we send (the standard library's parser)."""
    raw = render_email(mail, sender)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert raw.isascii() and all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert all(len(line) <= 78 for line in body.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage) and not message.defects
    return message


def outgoing(**overrides: object) -> OutgoingEmail:
    values: dict[str, object] = {
        "to": "rita@example.test",
        "subject": "2 new messages",
        "text": "plain",
        "html": "<p>html</p>",
        "message_id": "<abc@chat.example>",
        "date": AT,
        "unsubscribe": "https://chat.example/settings",
    }
    values.update(overrides)
    return OutgoingEmail(**values)  # type: ignore[arg-type]


def test_the_email_has_fixed_message_id_date_unsubscribe_and_both_parts() -> None:
    message = parsed(outgoing())
    assert message["Message-ID"] == "<abc@chat.example>"
    assert message["Date"] == "Mon, 15 Jun 2026 12:00:00 +0000"
    assert message["List-Unsubscribe"] == "<https://chat.example/settings>"
    assert message["From"] == "Chat <no-reply@chat.example>" and message["To"] == "rita@example.test"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(preferencelist=("plain",)).get_content().strip() == "plain"  # type: ignore[union-attr]
    assert message.get_body(preferencelist=("html",)).get_content().strip() == "<p>html</p>"  # type: ignore[union-attr]


def test_non_ascii_text_long_lines_and_leading_dots_arrive_unchanged() -> None:
    text = "Grüße, Jürgen 👋\n.a line starting with a dot\n" + "x" * 300 + " \nend = 3D"
    html = "<p>Ça va ? " + "é" * 200 + "</p>"
    message = parsed(outgoing(subject="1 new message from Zoë Ünal " + "ß" * 60, text=text, html=html))
    assert str(message["Subject"]) == "1 new message from Zoë Ünal " + "ß" * 60
    plain = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == text  # lines end in CRLF on the wire
    assert message.get_body(preferencelist=("html",)).get_content() == html  # type: ignore[union-attr]


def test_an_account_email_without_html_is_a_single_plain_part() -> None:
    message = parsed(outgoing(html=None, unsubscribe=None, subject="Reset your password"))
    assert message.get_content_type() == "text/plain" and message["List-Unsubscribe"] is None
    assert message.get_content().strip() == "plain"


def test_a_line_break_never_opens_a_header_of_its_own() -> None:
    message = parsed(outgoing(subject="hello\r\nBcc: victim@example.test"))
    assert message["Bcc"] is None and str(message["Subject"]) == "hello Bcc: victim@example.test"
    with pytest.raises(BadHeader):
        render_email(outgoing(to="rita@example.test\r\nBcc: victim@example.test"), "Chat <a@b.c>")


def test_a_non_ascii_sender_name_is_an_encoded_word() -> None:
    message = parsed(outgoing(), sender="Beratung München <no-reply@chat.example>")
    assert message["From"].addresses[0].display_name == "Beratung München"
    assert message["From"].addresses[0].addr_spec == "no-reply@chat.example"
