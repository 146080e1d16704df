"""Pending window against the real broker, database and SMTP server: one digest, nothing once read."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from shared.events import MessagePayload, MessageUnread, MessageUpdated
from tests.notifier.conftest import Publish, StartNotifier
from tests.notifier.helpers import (
    FakeClock,
    consumed,
    notifications_of,
    presence,
    read,
    thread_of,
    unread,
    unread_count,
    user,
    wait_until,
)
from tests.support.smtp import SmtpServer


def deleted(event: MessageUnread, at: datetime) -> MessageUpdated:
    """The ``message.updated`` that deletes the unread message ``event`` tells of."""
    p = event.payload
    return MessageUpdated(
        payload=MessagePayload(
            message_id=p.message_id,
            conversation_id=p.conversation_id,
            seq=p.seq,
            sender_id=p.sender_id,
            client_id="c1",
            body="",
            created_at=p.created_at,
            deleted_at=at,
        )
    )


async def test_a_burst_of_20_messages_to_an_offline_recipient_gives_exactly_one_email_listing_them(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60, digest_max_items=20)
    recipient = user(name="Olga Offline")
    await publish(recipient)
    rid, conversation = recipient.payload.user_id, uuid.uuid4()
    for seq in range(1, 21):
        await publish(unread(rid, conversation, seq, body=f"line {seq}\nsecond line"))
    await wait_until(lambda: _has(runtime.sessions, rid, 20), what="20 pending messages")
    assert smtp.sink.to(recipient.payload.email or "") == []  # still inside the grace window

    clock.advance(61)
    runtime.scheduler.wake()
    [mail] = await smtp.sink.wait_for(1, to=recipient.payload.email)
    lines = mail.text().splitlines()
    assert "20 new messages" in mail.subject
    for seq in range(1, 21):
        assert f"- Adam Admin: line {seq}" in lines
    body = mail.text()
    assert "second line" not in body  # first lines only
    assert f"/conversations/{conversation}" in body
    assert mail.message["Message-ID"].endswith("@chat.localhost>")
    assert mail.message["Date"] and mail.message["List-Unsubscribe"]
    assert mail.message.get_body(preferencelist=("html",)) is not None

    # Looking again decides nothing new: still exactly one email.
    await runtime.scheduler.run_once()
    await runtime.dispatcher.run_once()
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1

    async def recorded():  # type: ignore[no-untyped-def]
        rows = await notifications_of(runtime.sessions, rid)
        return rows if rows and rows[0]["status"] == "sent" else None

    [sent] = await wait_until(recorded, what="the send to be recorded")
    assert (sent["message_count"], sent["attempts"]) == (20, 1)


async def _has(sessions, rid: uuid.UUID, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await unread_count(sessions, rid) >= n


async def test_reading_within_the_window_sends_nothing(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60)
    recipient = user()
    await publish(recipient)
    rid = recipient.payload.user_id
    read_conv, control_conv = uuid.uuid4(), uuid.uuid4()
    for seq in (1, 2, 3):
        await publish(unread(rid, read_conv, seq))
    await publish(unread(rid, control_conv, 1))
    await publish(read(rid, read_conv, 3))

    async def read_applied() -> bool:
        thread = await thread_of(runtime.sessions, rid, read_conv)
        return thread is not None and thread["read_seq"] == 3 and thread["due_at"] is None

    await wait_until(read_applied, what="the read to close the window")
    clock.advance(120)
    await runtime.scheduler.run_once()
    # The unread control conversation proves the window did pass and digests do go out.
    [mail] = await smtp.sink.wait_for(1, to=recipient.payload.email)
    assert f"/conversations/{control_conv}" in mail.text()
    await runtime.dispatcher.run_once()
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1
    rows = await notifications_of(runtime.sessions, rid)
    assert [r["conversation_id"] for r in rows] == [control_conv]


async def test_an_idle_but_connected_recipient_is_notified(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, idle_after_s=300)
    recipient = user(name="Ivan Idle")
    await publish(recipient)
    rid = recipient.payload.user_id
    # Tab open (one live connection) but no activity for ten minutes.
    idle = presence(rid, "idle", last_seen=clock.now - timedelta(minutes=10), connections=1)
    await publish(idle)
    await consumed(runtime.sessions, recipient, idle)
    await publish(unread(rid, uuid.uuid4(), 1, body="are you there?"))
    [mail] = await smtp.sink.wait_for(1, to=recipient.payload.email)
    assert "are you there?" in mail.text()


async def test_an_active_recipient_is_not_notified_until_they_go_away(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock)
    recipient = user()
    await publish(recipient)
    rid, conversation = recipient.payload.user_id, uuid.uuid4()
    active = presence(rid, "active", last_seen=clock.now)
    await publish(active)
    await consumed(runtime.sessions, recipient, active)
    await publish(unread(rid, conversation, 1))

    async def deferred() -> bool:
        thread = await thread_of(runtime.sessions, rid, conversation)
        return thread is not None and thread["defer_reason"] == "active"

    await wait_until(deferred, what="a deferral because the recipient is active")
    assert smtp.sink.to(recipient.payload.email or "") == []
    await publish(presence(rid, "offline", last_seen=clock.now, connections=0))
    [mail] = await smtp.sink.wait_for(1, to=recipient.payload.email)
    assert "1 new message" in mail.subject


async def test_a_deleted_message_is_not_notified(
    notifier: StartNotifier, publish: Publish, smtp: SmtpServer, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60)
    recipient = user()
    await publish(recipient)
    rid, conversation = recipient.payload.user_id, uuid.uuid4()
    event = unread(rid, conversation, 1, body="oops, wrong chat")
    await publish(event)
    deletion = deleted(event, clock.now)
    await publish(deletion)
    await consumed(runtime.sessions, event, deletion)  # in either order: a tombstone covers both
    clock.advance(61)
    await runtime.scheduler.run_once()
    # Depending on which event the concurrent consumer applied first, the message never became
    # pending (its tombstone came first) or its digest was suppressed as deleted.
    rows = await notifications_of(runtime.sessions, rid)
    assert [(r["status"], r["reason"]) for r in rows] in ([], [("suppressed", "deleted")])
    assert smtp.sink.to(recipient.payload.email or "") == []


async def test_the_scheduler_sleeps_until_the_next_thread_is_due_not_a_whole_poll(
    notifier: StartNotifier, publish: Publish, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=30, scheduler_poll_s=120)
    recipient = user()
    await publish(recipient)
    rid, conversation = recipient.payload.user_id, uuid.uuid4()
    await publish(unread(rid, conversation, 1))

    async def opened() -> bool:
        thread = await thread_of(runtime.sessions, rid, conversation)
        return thread is not None and thread["due_at"] is not None

    await wait_until(opened, what="the pending window to open")
    clock.advance(25)
    assert await runtime.scheduler.run_once() == 0  # not due yet
    # Due in 5 s: the loop wakes then, not after its 30 s poll (the grace window caps the poll).
    assert 4 <= runtime.scheduler.next_wait_s() <= 5.5
    clock.advance(5.5)
    await runtime.scheduler.run_once()
    assert runtime.scheduler.next_wait_s() == runtime.scheduler.poll_s == 30  # nothing pending


async def test_a_redelivered_event_in_the_same_batch_is_applied_once(
    notifier: StartNotifier, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60)
    recipient = user()
    rid, conversation = recipient.payload.user_id, uuid.uuid4()
    first, second = unread(rid, conversation, 1), unread(rid, conversation, 2)
    await runtime.consumer.handle_batch([recipient, first, second, first, recipient])
    await runtime.consumer.handle_batch([first, second])  # replays of a committed batch
    assert await unread_count(runtime.sessions, rid) == 2
    thread = await thread_of(runtime.sessions, rid, conversation)
    assert thread is not None and thread["due_at"] is not None


async def test_a_batch_of_unread_events_decides_like_one_event_at_a_time(
    notifier: StartNotifier, clock: FakeClock
) -> None:
    """Set-based ``message.unread``: reads, tombstones and window extension in delivery order."""
    runtime = await notifier(clock=clock, grace_window_s=60, max_window_s=90)
    recipient = user()
    rid, conv, other = recipient.payload.user_id, uuid.uuid4(), uuid.uuid4()
    doomed = unread(rid, other, 1)
    deletion = deleted(doomed, clock.now)
    opened_at = clock.now
    await runtime.consumer.handle_batch(
        [recipient, deletion, unread(rid, conv, 1), unread(rid, conv, 2), read(rid, conv, 2), doomed]
    )
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None and thread["read_seq"] == 2 and thread["due_at"] is None  # read closed it
    assert await thread_of(runtime.sessions, rid, other) is not None
    assert (await thread_of(runtime.sessions, rid, other))["due_at"] is None  # type: ignore[index]
    assert await unread_count(runtime.sessions, rid) == 0  # read, and the tombstoned one never added

    clock.advance(50)
    late = unread(rid, conv, 2, at=clock.now)  # at or below the read position: ignored
    await runtime.consumer.handle_batch(
        [late, unread(rid, conv, 3, at=clock.now), unread(rid, conv, 4, at=clock.now)]
    )
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None and thread["opened_at"] == clock.now
    assert thread["due_at"] == clock.now + timedelta(seconds=60)
    clock.advance(50)
    await runtime.consumer.handle_batch([unread(rid, conv, 5, at=clock.now)])
    thread = await thread_of(runtime.sessions, rid, conv)
    # Extended by the burst, but never past opened + max window (50 + 90 - 50 s from now).
    assert thread is not None and thread["due_at"] == clock.now + timedelta(seconds=40)
    assert await unread_count(runtime.sessions, rid) == 3
    assert opened_at < thread["opened_at"]


async def test_the_window_closes_one_grace_after_the_send_even_when_the_event_arrives_late(
    notifier: StartNotifier, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60, settle_s=1)
    recipient = user()
    rid, conv, backlogged = recipient.payload.user_id, uuid.uuid4(), uuid.uuid4()
    sent = clock.now - timedelta(seconds=20)
    await runtime.consumer.handle_batch(
        [recipient, unread(rid, conv, 1, at=sent), unread(rid, backlogged, 1, at=sent - timedelta(hours=1))]
    )
    thread = await thread_of(runtime.sessions, rid, conv)
    assert thread is not None and thread["due_at"] == sent + timedelta(seconds=60)
    late = await thread_of(runtime.sessions, rid, backlogged)
    assert late is not None and late["due_at"] == clock.now + timedelta(seconds=1)
