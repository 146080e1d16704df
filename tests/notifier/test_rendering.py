"""Unit tests of what notifications say and how the email is built."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.notifier.adapters.email import build_message
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


def test_the_email_has_fixed_message_id_date_unsubscribe_and_both_parts() -> None:
    message = build_message(
        OutgoingEmail(
            to="rita@example.test",
            subject="2 new messages",
            text="plain",
            html="<p>html</p>",
            message_id="<abc@chat.example>",
            date=AT,
            unsubscribe="https://chat.example/settings",
        ),
        "Chat <no-reply@chat.example>",
    )
    assert message["Message-ID"] == "<abc@chat.example>"
    assert message["Date"] == "Mon, 15 Jun 2026 12:00:00 +0000"
    assert message["List-Unsubscribe"] == "<https://chat.example/settings>"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(preferencelist=("plain",)).get_content().strip() == "plain"  # type: ignore[union-attr]
    assert message.get_body(preferencelist=("html",)) is not None
