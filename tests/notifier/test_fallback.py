"""Channel fallback after a clear refusal, and a failed digest giving its cooldown back."""

from __future__ import annotations

import uuid

import pytest

from services.notifier.bootstrap import NotifierRuntime
from tests.notifier.conftest import Publish, StartNotifier
from tests.notifier.helpers import (
    FakeClock,
    attempts_of,
    final_notifications,
    notifications_of,
    thread_of,
    unread,
    user,
    vonage_settings,
    wait_until,
)
from tests.support.smtp import SmtpServer
from tests.support.vonage_stub import StubReply, VonageStub


async def test_a_digest_refused_for_good_by_email_goes_once_by_sms_and_both_attempts_are_recorded(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, vonage: VonageStub
) -> None:
    runtime = await notifier(**vonage_settings(vonage), frontend_url="https://chat.example")
    smtp.sink.fail_next = ["550 5.1.1 mailbox unavailable"]
    recipient = user(phone="+14155550111", sms_enabled=True)  # channels for users: email, then sms
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(recipient)
    await publish(unread(rid, conv, 1))

    failed, fallback = await final_notifications(runtime.sessions, rid, 2)
    assert (failed["channel"], failed["status"], failed["attempts"]) == ("email", "failed", 1)
    assert "550" in failed["reason"]
    assert (fallback["channel"], fallback["status"], fallback["attempts"]) == ("sms", "sent", 1)
    assert fallback["fallback_of"] == failed["id"]
    assert [a["status"] for a in await attempts_of(runtime.sessions, failed["id"])] == ["permanent"]
    assert [a["status"] for a in await attempts_of(runtime.sessions, fallback["id"])] == ["sent"]
    [sms] = vonage.state.to("+14155550111")
    assert sms.text.startswith(
        f"1 new message from Adam Admin. Open: https://chat.example/conversations/{conv}"
    )

    assert await runtime.dispatcher.run_once() == 0  # nothing left that could send it again
    assert len(vonage.state.to("+14155550111")) == 1
    assert smtp.sink.to(recipient.payload.email or "") == []
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None and thread["cooldown_level"] == 1  # the delivered copy holds the cooldown


@pytest.mark.parametrize(
    ("first_reply", "falls_back"),
    [(StubReply(http_status=500), False), (StubReply(http_status=429), True)],
    ids=["after-an-ambiguous-5xx-never", "after-a-clear-429-throttle"],
)
async def test_a_refused_sms_falls_back_to_email_only_when_no_attempt_was_ambiguous(
    notifier: StartNotifier,
    publish: Publish,
    smtp: SmtpServer,
    vonage: VonageStub,
    first_reply: StubReply,
    falls_back: bool,
) -> None:
    runtime = await notifier(**vonage_settings(vonage), channels_user="sms,email")
    # The first try gets a 500 (Vonage may have taken the SMS) or a 429 (it surely did not),
    # the retry a clear "invalid number".
    vonage.state.fail_next = [first_reply, StubReply(status="3", error_text="Invalid to number")]
    recipient = user(phone="+14155550112", sms_enabled=True)
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(recipient)
    await publish(unread(rid, conv, 1))

    rows = await final_notifications(runtime.sessions, rid, 2 if falls_back else 1)
    first = rows[0]
    assert (first["channel"], first["status"]) == ("sms", "failed")
    tries = await attempts_of(runtime.sessions, first["id"])
    assert [a["status"] for a in tries] == ["transient", "permanent"]
    emails = smtp.sink.to(recipient.payload.email or "")
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None
    if falls_back:
        assert (rows[1]["channel"], rows[1]["status"], rows[1]["fallback_of"]) == (
            "email",
            "sent",
            first["id"],
        )
        assert len(emails) == 1
    else:
        assert emails == []
        assert thread["cooldown_level"] == 1  # it may have arrived: the cooldown stands


@pytest.mark.parametrize("with_fallback", [False, True], ids=["email-only", "email-then-sms-both-refused"])
async def test_a_digest_that_finally_failed_does_not_start_the_cooldown_so_the_next_message_is_told(
    notifier: StartNotifier,
    publish: Publish,
    smtp: SmtpServer,
    vonage: VonageStub,
    clock: FakeClock,
    with_fallback: bool,
) -> None:
    runtime = await notifier(clock=clock, cooldowns_s="600,3600", **vonage_settings(vonage))
    smtp.sink.fail_next = ["554 5.7.1 rejected"]
    if with_fallback:
        vonage.state.fail_next = [StubReply(status="3", error_text="Invalid to number")]
        recipient = user(phone="+14155550113", sms_enabled=True)
    else:
        recipient = user()
    email = recipient.payload.email or ""
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(recipient)
    await publish(unread(rid, conv, 1))
    failed = await final_notifications(runtime.sessions, rid, 2 if with_fallback else 1)
    expected = {("email", "failed"), ("sms", "failed")} if with_fallback else {("email", "failed")}
    assert {(r["channel"], r["status"]) for r in failed} == expected
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None
    assert (thread["cooldown_level"], thread["last_notified_at"], thread["notified_seq"]) == (0, None, 0)

    # No time passes: a cooldown would hold this one back for ten minutes.
    await publish(unread(rid, conv, 2))
    [mail] = await smtp.sink.wait_for(1, to=email)
    assert "2 new messages" in mail.subject  # what never arrived is told again with the news
    rows = await final_notifications(runtime.sessions, rid, len(failed) + 1)
    assert [(r["channel"], r["max_seq"]) for r in rows if r["status"] == "sent"] == [("email", 2)]
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None and thread["cooldown_level"] == 1


async def test_news_held_back_by_the_cooldown_of_a_digest_that_then_failed_is_told_at_once(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, cooldowns_s="600")
    await runtime.dispatcher.stop()  # this test drives the sends itself
    recipient = user()
    email = recipient.payload.email or ""
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(recipient)
    await publish(unread(rid, conv, 1))
    await final_notifications_queued(runtime, rid, 1)
    await publish(unread(rid, conv, 2))  # arrives while the first digest is still on its way

    async def held_back():  # type: ignore[no-untyped-def]
        t = await thread_of(runtime.sessions, rid, conv)
        return t if t is not None and t["defer_reason"] == "cooldown" else None

    await wait_until(held_back, what="the second message to wait for the cooldown")
    smtp.sink.fail_next = ["550 5.1.1 mailbox unavailable"]
    assert await runtime.dispatcher.run_once() == 1  # refused for good, no other channel
    await final_notifications_queued(runtime, rid, 2)  # decided again without waiting ten minutes
    assert await runtime.dispatcher.run_once() == 1
    [mail] = smtp.sink.to(email)
    assert "2 new messages" in mail.subject


async def final_notifications_queued(runtime: NotifierRuntime, rid: uuid.UUID, count: int) -> None:
    async def probe() -> bool:
        rows = await notifications_of(runtime.sessions, rid)
        return len(rows) == count and any(r["status"] == "queued" for r in rows)

    await wait_until(probe, what=f"notification {count} to be queued")
