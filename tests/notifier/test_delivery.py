"""Delivery guarantees: retries, permanent failures, OTP and account emails, the support RPC."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.events import (
    AccountEmailPayload,
    EmailVerificationRequested,
    OtpRequested,
    OtpRequestedPayload,
    PasswordResetRequested,
)
from shared.messaging.rpc import RpcClient, RpcError
from tests.notifier.conftest import Publish, StartNotifier
from tests.notifier.helpers import (
    FakeClock,
    attempts_of,
    consumed,
    notifications_of,
    read,
    unread,
    user,
    wait_until,
)
from tests.support.smtp import SmtpServer
from tests.support.vonage_stub import StubReply, VonageStub


async def _final(runtime, rid: uuid.UUID):  # type: ignore[no-untyped-def]
    async def probe():  # type: ignore[no-untyped-def]
        rows = await notifications_of(runtime.sessions, rid)
        return rows[0] if rows and rows[0]["status"] not in ("queued", "sending") else None

    return await wait_until(probe, what="a final notification status")


async def test_a_transient_smtp_failure_is_retried_and_delivered_once(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer
) -> None:
    runtime = await notifier()
    smtp.sink.fail_next = ["451 4.3.0 try later"]
    recipient = user()
    await publish(recipient)
    await publish(unread(recipient.payload.user_id, uuid.uuid4(), 1))
    row = await _final(runtime, recipient.payload.user_id)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    tries = await attempts_of(runtime.sessions, row["id"])
    assert [a["status"] for a in tries] == ["transient", "sent"]
    assert "451" in tries[0]["error"]
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1


async def test_a_permanent_smtp_failure_is_recorded_and_not_retried(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer
) -> None:
    runtime = await notifier()
    smtp.sink.fail_next = ["554 5.7.1 rejected"]
    recipient = user()
    await publish(recipient)
    await publish(unread(recipient.payload.user_id, uuid.uuid4(), 1))
    row = await _final(runtime, recipient.payload.user_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "554" in row["reason"]
    await runtime.dispatcher.run_once()  # nothing left to pick up
    tries = await attempts_of(runtime.sessions, row["id"])
    assert [a["status"] for a in tries] == ["permanent"]
    assert smtp.sink.to(recipient.payload.email or "") == []


def _vonage_settings(vonage: VonageStub) -> dict[str, str]:
    env = vonage.env()
    return {
        "sms_provider": "vonage",
        "vonage_api_key": env["NOTIFIER_VONAGE_API_KEY"],
        "vonage_api_secret": env["NOTIFIER_VONAGE_API_SECRET"],
        "vonage_rest_host": vonage.rest_host,
        "vonage_ca_bundle": str(vonage.ca_path),
    }


async def test_the_otp_sms_carries_the_code_and_leaves_within_a_second(
    notifier: StartNotifier, publish: Publish, vonage: VonageStub
) -> None:
    runtime = await notifier(**_vonage_settings(vonage))
    uid = uuid.uuid4()
    event = OtpRequested(
        payload=OtpRequestedPayload(
            user_id=uid,
            phone="+14155550199",
            code="493817",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
    )
    started = time.monotonic()
    await publish(event)
    [sms] = await vonage.state.wait_for(1, to="+14155550199", timeout=5)
    assert sms.received_at - started < 1.0
    assert "493817" in sms.text
    await publish(event)  # a redelivered event never sends twice
    row = await _final(runtime, uid)
    assert row["status"] == "sent" and row["body_text"] is None  # the code does not stay in the database
    assert len(await notifications_of(runtime.sessions, uid)) == 1
    assert len(vonage.state.to("+14155550199")) == 1


async def test_an_expired_otp_is_never_sent(
    notifier: StartNotifier, publish: Publish, vonage: VonageStub
) -> None:
    runtime = await notifier(**_vonage_settings(vonage))
    late = OtpRequested(
        payload=OtpRequestedPayload(
            user_id=uuid.uuid4(),
            phone="+14155550198",
            code="111111",
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    )
    fresh = OtpRequested(
        payload=OtpRequestedPayload(
            user_id=uuid.uuid4(),
            phone="+14155550197",
            code="222222",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
    )
    await publish(late)
    await publish(fresh)  # same queue, consumed after the late one
    await vonage.state.wait_for(1, to="+14155550197")
    assert vonage.state.to("+14155550198") == []
    assert await notifications_of(runtime.sessions, late.payload.user_id) == []


async def test_a_throttled_otp_is_retried_with_the_vonage_sdk_and_a_bad_number_is_not(
    notifier: StartNotifier, publish: Publish, vonage: VonageStub
) -> None:
    runtime = await notifier(**_vonage_settings(vonage))
    vonage.state.fail_next = [StubReply(status="1", error_text="Throttled"), StubReply(http_status=429)]
    ok = OtpRequested(
        payload=OtpRequestedPayload(
            user_id=uuid.uuid4(),
            phone="+14155550196",
            code="333333",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
    )
    await publish(ok)
    row = await _final(runtime, ok.payload.user_id)
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert len(vonage.state.to("+14155550196")) == 1

    vonage.state.fail_next = [StubReply(status="3", error_text="Invalid to number")]
    bad = OtpRequested(
        payload=OtpRequestedPayload(
            user_id=uuid.uuid4(),
            phone="+14155550195",
            code="444444",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
    )
    await publish(bad)
    row = await _final(runtime, bad.payload.user_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "status 3" in row["reason"]


@pytest.mark.parametrize("kind", [EmailVerificationRequested, PasswordResetRequested])
async def test_account_emails_go_out_at_once_with_their_link(
    notifier: StartNotifier,
    publish: Publish,
    smtp: SmtpServer,
    kind: type[EmailVerificationRequested] | type[PasswordResetRequested],
) -> None:
    runtime = await notifier(grace_window_s=60)  # the digest window does not apply to them
    uid = uuid.uuid4()
    link = f"https://chat.example/account/confirm?token={uuid.uuid4().hex}"
    await publish(
        kind(
            payload=AccountEmailPayload(
                user_id=uid,
                email="new.address@example.test",
                link=link,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    )
    [mail] = await smtp.sink.wait_for(1, to="new.address@example.test")
    assert link in mail.text()
    row = await _final(runtime, uid)
    assert row["status"] == "sent" and row["body_text"] is None  # the token does not stay behind


async def test_support_rpc_lists_recent_notifications_for_admins_only(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer
) -> None:
    runtime = await notifier()
    sent_to, muted = user(), user(email_enabled=False)
    for u in (sent_to, muted):
        await publish(u)
        await publish(unread(u.payload.user_id, uuid.uuid4(), 1))
    await smtp.sink.wait_for(1, to=sent_to.payload.email)
    await _final(runtime, sent_to.payload.user_id)
    await _final(runtime, muted.payload.user_id)

    client = RpcClient(runtime.broker, "notifier", timeout=5)
    await client.start()
    try:
        result = await client.call("notifications.recent", {"limit": 10}, actor={"role": "ADMIN"})
        by_recipient = {row["recipient_id"]: row for row in result["notifications"]}
        sent = by_recipient[str(sent_to.payload.user_id)]
        assert (sent["status"], sent["channel"], sent["attempts"]) == ("sent", "email", 1)
        assert sent["destination"].startswith(sent_to.payload.email[:2]) and "***" in sent["destination"]  # type: ignore[index]
        suppressed = by_recipient[str(muted.payload.user_id)]
        assert (suppressed["status"], suppressed["reason"]) == ("suppressed", "preference")
        with pytest.raises(RpcError) as denied:
            await client.call(
                "notifications.recent", {}, actor={"role": "USER", "user_id": str(uuid.uuid4())}
            )
        assert denied.value.code == "forbidden"
    finally:
        await client.stop()


async def test_silence_until_read_set_over_rpc_holds_further_notifications_until_read(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, cooldowns_s="600")
    recipient = user()
    email = recipient.payload.email or ""
    rid, conv = recipient.payload.user_id, uuid.uuid4()
    await publish(recipient)
    client = RpcClient(runtime.broker, "notifier", timeout=5)
    await client.start()
    try:
        reply = await client.call(
            "notifications.silence",
            {"conversation_id": str(conv), "silence_until_read": True},
            actor={"role": "USER", "user_id": str(rid)},
        )
        assert reply == {"conversation_id": str(conv), "silence_until_read": True}
        with pytest.raises(RpcError) as bad:
            await client.call(
                "notifications.silence", {"conversation_id": "nope"}, actor={"user_id": str(rid)}
            )
        assert bad.value.code == "bad_request"
    finally:
        await client.stop()

    await publish(unread(rid, conv, 1))
    await smtp.sink.wait_for(1, to=email)
    clock.advance(3600)  # the cooldown alone would allow another one now
    await publish(unread(rid, conv, 2))

    async def silenced():  # type: ignore[no-untyped-def]
        rows = await notifications_of(runtime.sessions, rid)
        return [r for r in rows if r["reason"] == "silenced"]

    await wait_until(silenced, what="the silenced suppression")
    assert len(smtp.sink.to(email)) == 1

    seen = read(rid, conv, 2)
    await publish(seen)
    await consumed(runtime.sessions, seen)
    await publish(unread(rid, conv, 3))
    clock.advance(601)
    runtime.scheduler.wake()
    mails = await smtp.sink.wait_for(2, to=email)
    assert "1 new message" in mails[1].subject


async def test_an_unreachable_smtp_server_is_retried_a_bounded_number_of_times_then_recorded_failed(
    notifier: StartNotifier, publish: Publish
) -> None:
    from tests.support.smtp import free_port

    runtime = await notifier(smtp_port=free_port(), send_attempts=3)  # nothing listens there
    recipient = user()
    await publish(recipient)
    await publish(unread(recipient.payload.user_id, uuid.uuid4(), 1))
    row = await _final(runtime, recipient.payload.user_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["reason"].startswith("gave up after retries")
    tries = await attempts_of(runtime.sessions, row["id"])
    assert [a["status"] for a in tries] == ["transient"] * 3


async def test_a_database_error_while_recording_an_attempt_leaves_the_digest_due_instead_of_failed(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    from shared.db import transaction

    runtime = await notifier(send_lease_s=1)
    await runtime.dispatcher.stop()  # this test drives the sends itself
    recipient = user()
    rid = recipient.payload.user_id
    await publish(recipient)
    await publish(unread(rid, uuid.uuid4(), 1))

    async def decided():  # type: ignore[no-untyped-def]
        rows = await notifications_of(runtime.sessions, rid)
        return rows if rows else None

    await wait_until(decided, what="the digest decision")
    await runtime.scheduler.stop()
    # The server refuses for now, and a real database failure hits the recording of that attempt.
    smtp.sink.fail_next = ["451 4.3.0 try later"]
    async with transaction(runtime.sessions) as session:
        await session.execute(text("ALTER TABLE notifier.attempts RENAME TO attempts_away"))
    try:
        with pytest.raises(ProgrammingError):
            await runtime.dispatcher.run_once()
    finally:
        async with transaction(runtime.sessions) as session:
            await session.execute(text("ALTER TABLE notifier.attempts_away RENAME TO attempts"))
    [row] = await notifications_of(runtime.sessions, rid)
    assert (row["status"], row["attempts"]) == ("sending", 0)  # not "failed": still due

    async def retried() -> bool:  # once the lease lapses, it goes out
        return await runtime.dispatcher.run_once() > 0

    await wait_until(retried, what="the lapsed lease to be claimed again")
    row = await _final(runtime, rid)
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1
