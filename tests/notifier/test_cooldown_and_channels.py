"""Anti-spam and channel choice against the real broker, database, SMTP server and Vonage SDK."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.notifier.bootstrap import NotifierRuntime
from tests.notifier.conftest import Publish, StartNotifier
from tests.notifier.helpers import FakeClock, notifications_of, read, thread_of, unread, user, wait_until
from tests.support.smtp import SmtpServer
from tests.support.vonage_stub import VonageStub


async def _deferred_until(runtime: NotifierRuntime, rid: uuid.UUID, conv: uuid.UUID, seq: int):  # type: ignore[no-untyped-def]
    """Wait until the scheduler looked at message ``seq`` and deferred it for the cooldown."""

    async def probe():  # type: ignore[no-untyped-def]
        thread = await thread_of(runtime.sessions, rid, conv)
        if thread is None or thread["defer_reason"] != "cooldown":
            return None
        return thread

    return await wait_until(probe, what=f"cooldown deferral after seq {seq}")


async def test_cooldown_escalates_while_away_and_resets_after_reading(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, cooldowns_s="600,3600,86400")
    recipient = user()
    email = recipient.payload.email or ""
    await publish(recipient)
    rid, conv = recipient.payload.user_id, uuid.uuid4()

    await publish(unread(rid, conv, 1))
    await smtp.sink.wait_for(1, to=email)
    first_at = clock.now

    # Second message right away: held back by the first cooldown step (10 min).
    await publish(unread(rid, conv, 2))
    thread = await _deferred_until(runtime, rid, conv, 2)
    assert thread["due_at"] == first_at + timedelta(seconds=600)
    clock.advance(601)
    runtime.scheduler.wake()
    mails = await smtp.sink.wait_for(2, to=email)
    assert "2 new messages" in mails[1].subject  # the digest covers everything still unread
    second_at = clock.now

    # Still away: the next step is one hour.
    await publish(unread(rid, conv, 3))
    thread = await _deferred_until(runtime, rid, conv, 3)
    assert thread["due_at"] == second_at + timedelta(seconds=3600)
    clock.advance(601)
    await runtime.scheduler.run_once()
    assert len(smtp.sink.to(email)) == 2  # ten minutes are no longer enough
    clock.advance(3000)
    runtime.scheduler.wake()
    await smtp.sink.wait_for(3, to=email)
    third_at = clock.now

    # Reading resets the escalation: the next wait is the base step again, not 24 h.
    await publish(read(rid, conv, 3))

    async def reset() -> bool:
        t = await thread_of(runtime.sessions, rid, conv)
        return t is not None and t["read_seq"] == 3 and t["cooldown_level"] == 1

    await wait_until(reset, what="the read to reset the cooldown")
    await publish(unread(rid, conv, 4))
    thread = await _deferred_until(runtime, rid, conv, 4)
    assert thread["due_at"] == third_at + timedelta(seconds=600)
    clock.advance(601)
    runtime.scheduler.wake()
    mails = await smtp.sink.wait_for(4, to=email)
    assert "1 new message from" in mails[3].subject  # only what is unread after the read
    assert len(smtp.sink.to(email)) == 4


async def test_quiet_hours_defer_the_digest_until_they_end_in_the_recipients_time_zone(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock)
    # A quiet window that surely contains "now" in Tokyo: from one hour ago to two hours ahead.
    from zoneinfo import ZoneInfo

    local = clock.now.astimezone(ZoneInfo("Asia/Tokyo"))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end_local = (local + timedelta(hours=2)).replace(second=0, microsecond=0)
    recipient = user(quiet=(start, end_local.strftime("%H:%M")), timezone="Asia/Tokyo")
    await publish(recipient)
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(unread(rid, conv, 1))

    async def deferred():  # type: ignore[no-untyped-def]
        t = await thread_of(runtime.sessions, rid, conv)
        return t if t is not None and t["defer_reason"] == "quiet_hours" else None

    thread = await wait_until(deferred, what="a quiet-hours deferral")
    assert thread["due_at"] == end_local
    clock.now = end_local + timedelta(seconds=1)
    runtime.scheduler.wake()
    await smtp.sink.wait_for(1, to=recipient.payload.email)  # deferred, never dropped


async def test_sms_goes_only_to_verified_phones_with_sms_enabled(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, vonage: VonageStub
) -> None:
    env = vonage.env()
    runtime = await notifier(
        sms_provider="vonage",
        vonage_api_key=env["NOTIFIER_VONAGE_API_KEY"],
        vonage_api_secret=env["NOTIFIER_VONAGE_API_SECRET"],
        vonage_rest_host=vonage.rest_host,
        vonage_ca_bundle=str(vonage.ca_path),
        channels_user="sms,email",
        frontend_url="https://chat.example",
    )
    verified = user(phone="+14155550101", sms_enabled=True)
    unverified = user(phone=None, sms_enabled=True)  # auth only sends verified numbers
    sms_off = user(phone="+14155550103", sms_enabled=False, email_enabled=False)
    for u in (verified, unverified, sms_off):
        await publish(u)
        await publish(unread(u.payload.user_id, uuid.uuid4(), 1, body="private text"))

    [sms] = await vonage.state.wait_for(1, to="+14155550101")
    assert sms.text.startswith("1 new message from Adam Admin. Open: https://chat.example/conversations/")
    assert "private text" not in sms.text
    await smtp.sink.wait_for(1, to=unverified.payload.email)  # falls back to email

    async def suppressed():  # type: ignore[no-untyped-def]
        rows = await notifications_of(runtime.sessions, sms_off.payload.user_id)
        return rows[0] if rows else None

    row = await wait_until(suppressed, what="the preference suppression")
    assert (row["status"], row["reason"]) == ("suppressed", "preference")
    assert [m.to for m in vonage.state.messages] == ["14155550101"]
    assert smtp.sink.to(verified.payload.email or "") == []  # one channel, not both
