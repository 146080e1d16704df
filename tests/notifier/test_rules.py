"""Unit tests of the send-time rules: presence, cooldown, quiet hours, channel choice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.domain.model import (
    Defer,
    Policy,
    Presence,
    Recipient,
    Send,
    Suppress,
    Thread,
    UnreadMessage,
    Window,
)
from services.notifier.domain.rules import (
    choose_channel,
    cooldown_after,
    decide,
    effective_level,
    fallback_channel,
    level_after_read,
    next_allowed_at,
    quiet_hours_end,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
POLICY = Policy()
RID, CID = uuid.uuid4(), uuid.uuid4()


def recipient(**overrides: object) -> Recipient:
    values: dict[str, object] = {"user_id": RID, "display_name": "Rita", "email": "rita@example.test"}
    values.update(overrides)
    return Recipient(**values)  # type: ignore[arg-type]


def message(seq: int, *, deleted: bool = False) -> UnreadMessage:
    return UnreadMessage(seq, uuid.uuid4(), "Adam", f"body {seq}", NOW - timedelta(minutes=5), deleted)


def thread(*seqs: int, read_seq: int = 0, last: datetime | None = None, level: int = 0) -> Thread:
    return Thread(RID, CID, read_seq, last, level, tuple(message(s) for s in seqs))


def run(
    t: Thread, *, who: Recipient | None = None, seen: Presence | None = None, now: datetime = NOW
) -> object:
    return decide(now=now, recipient=who or recipient(), presence=seen, thread=t, policy=POLICY)


# --- what is there to tell ----------------------------------------------------


def test_an_unread_message_to_an_offline_recipient_is_sent_by_email() -> None:
    decision = run(thread(1, 2))
    assert isinstance(decision, Send)
    assert (decision.channel, decision.destination) == ("email", "rita@example.test")
    assert [m.seq for m in decision.messages] == [1, 2]


def test_everything_read_is_suppressed_as_read() -> None:
    assert run(thread(1, 2, read_seq=2)) == Suppress("read")


def test_only_deleted_messages_left_are_suppressed_as_deleted() -> None:
    t = Thread(RID, CID, 0, None, 0, (message(1, deleted=True),))
    assert run(t) == Suppress("deleted")


def test_deleted_messages_are_left_out_of_the_digest() -> None:
    t = Thread(RID, CID, 0, None, 0, (message(1, deleted=True), message(2)))
    decision = run(t)
    assert isinstance(decision, Send) and [m.seq for m in decision.messages] == [2]


def test_an_unknown_recipient_is_waited_for_a_while_then_suppressed() -> None:
    fresh = Thread(RID, CID, 0, None, 0, (message(1),), opened_at=NOW - timedelta(minutes=1))
    assert decide(now=NOW, recipient=None, presence=None, thread=fresh, policy=POLICY) == Defer(
        NOW + POLICY.unknown_recipient_retry, "unknown_recipient"
    )
    old = Thread(RID, CID, 0, None, 0, (message(1),), opened_at=NOW - POLICY.unknown_recipient_give_up)
    assert decide(now=NOW, recipient=None, presence=None, thread=old, policy=POLICY) == Suppress(
        "unknown_recipient"
    )


# --- presence -----------------------------------------------------------------


def test_an_active_recipient_defers_for_a_recheck() -> None:
    assert run(thread(1), seen=Presence("active", NOW)) == Defer(NOW + POLICY.active_recheck, "active")


def test_a_stale_active_presence_counts_as_away() -> None:
    assert isinstance(run(thread(1), seen=Presence("active", NOW - POLICY.presence_stale)), Send)


def test_a_recently_idle_recipient_defers_until_the_idle_time_has_passed() -> None:
    seen = Presence("idle", NOW - timedelta(minutes=2))
    assert run(thread(1), seen=seen) == Defer(seen.last_seen + POLICY.idle_after, "active")


def test_an_idle_recipient_past_the_idle_time_is_notified() -> None:
    assert isinstance(run(thread(1), seen=Presence("idle", NOW - timedelta(minutes=6))), Send)


# --- cooldown -----------------------------------------------------------------


def test_cooldown_escalates_step_by_step_and_stays_at_the_last_step() -> None:
    steps = [cooldown_after(level, POLICY) for level in range(5)]
    assert steps == [
        timedelta(0),
        timedelta(minutes=10),
        timedelta(hours=1),
        timedelta(hours=24),
        timedelta(hours=24),
    ]


def test_a_notification_within_the_cooldown_is_deferred_to_its_end() -> None:
    last = NOW - timedelta(minutes=30)
    assert run(thread(1, last=last, level=2)) == Defer(last + timedelta(hours=1), "cooldown")
    assert isinstance(run(thread(1, last=last, level=1)), Send)  # 10 min step already over


def test_a_long_silence_forgets_the_escalation() -> None:
    last = NOW - POLICY.cooldown_reset
    assert effective_level(3, last, NOW, POLICY) == 0
    assert next_allowed_at(thread(1, last=last, level=3), NOW, POLICY) is None
    assert effective_level(3, NOW - timedelta(hours=1), NOW, POLICY) == 3


def test_reading_resets_the_escalation_to_the_base_step() -> None:
    assert [level_after_read(level) for level in (0, 1, 2, 5)] == [0, 1, 1, 1]


# --- quiet hours --------------------------------------------------------------


def test_overnight_quiet_hours_defer_until_the_morning_in_the_recipients_zone() -> None:
    now = datetime(2026, 6, 15, 21, 30, tzinfo=UTC)  # 23:30 in Berlin (CEST)
    end = quiet_hours_end(now, "22:00", "07:00", "Europe/Berlin")
    assert end == datetime(2026, 6, 16, 5, 0, tzinfo=UTC)
    after_midnight = datetime(2026, 6, 16, 1, 0, tzinfo=UTC)  # 03:00 in Berlin
    assert quiet_hours_end(after_midnight, "22:00", "07:00", "Europe/Berlin") == end


def test_outside_quiet_hours_nothing_is_deferred() -> None:
    assert quiet_hours_end(NOW, "22:00", "07:00", "Europe/Berlin") is None  # 14:00 Berlin
    assert quiet_hours_end(NOW, "13:00", "15:00", "UTC") is None
    assert quiet_hours_end(NOW, "11:00", "15:00", "UTC") == datetime(2026, 6, 15, 15, 0, tzinfo=UTC)
    assert quiet_hours_end(NOW, "09:00", "09:00", "UTC") is None
    assert quiet_hours_end(NOW, None, "07:00", "UTC") is None


def test_quiet_hours_follow_the_daylight_saving_change() -> None:
    # 2026-03-08 in New York: clocks jump from 02:00 EST to 03:00 EDT.
    now = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST
    end = quiet_hours_end(now, "22:00", "07:00", "America/New_York")
    assert end == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # 07:00 EDT


def test_an_unknown_time_zone_falls_back_to_utc() -> None:
    assert quiet_hours_end(NOW, "11:00", "13:00", "Mars/Olympus") == datetime(2026, 6, 15, 13, 0, tzinfo=UTC)


def test_quiet_hours_defer_and_never_drop() -> None:
    who = recipient(quiet_start="11:00", quiet_end="13:00")
    assert run(thread(1), who=who) == Defer(datetime(2026, 6, 15, 13, 0, tzinfo=UTC), "quiet_hours")


# --- channels -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (recipient(phone="+14155550100", sms_enabled=True), ("email", "rita@example.test")),
        (recipient(email=None, phone="+14155550100", sms_enabled=True), ("sms", "+14155550100")),
        (recipient(email_enabled=False, phone="+14155550100", sms_enabled=True), ("sms", "+14155550100")),
        (recipient(email=None, phone="+14155550100", sms_enabled=False), None),
        (recipient(email=None, phone=None, sms_enabled=True), None),
    ],
)
def test_channel_choice_needs_a_verified_destination_and_the_channel_enabled(
    who: Recipient, expected: tuple[str, str] | None
) -> None:
    assert choose_channel(who, POLICY) == expected


def test_channel_order_and_fallback_are_per_role() -> None:
    policy = Policy(channels={"USER": ("sms", "email"), "ADMIN": ("email",)}, fallback={"USER": False})
    user = recipient(phone="+14155550100", sms_enabled=True)
    assert choose_channel(user, policy) == ("sms", "+14155550100")
    no_phone = recipient()
    assert choose_channel(no_phone, policy) is None  # no fallback to email for users here
    admin = recipient(role="ADMIN", phone="+14155550100", sms_enabled=True)
    assert choose_channel(admin, policy) == ("email", "rita@example.test")


def test_no_usable_channel_is_suppressed_as_preference() -> None:
    assert run(thread(1), who=recipient(email_enabled=False)) == Suppress("preference")


def test_silence_until_read_allows_one_notification_then_nothing_until_read() -> None:
    silent = Thread(RID, CID, 0, NOW - timedelta(days=1), 1, (message(1), message(2)), notified_seq=1)
    assert isinstance(run(silent), Send)  # flag off: the normal rules apply
    flagged = Thread(
        RID,
        CID,
        0,
        NOW - timedelta(days=1),
        1,
        (message(1), message(2)),
        notified_seq=1,
        silence_until_read=True,
    )
    assert run(flagged) == Suppress("silenced")
    after_read = Thread(
        RID, CID, 1, NOW - timedelta(days=1), 1, (message(2),), notified_seq=1, silence_until_read=True
    )
    assert isinstance(run(after_read), Send)


# --- fallback after a clear refusal ---------------------------------------------


def test_the_fallback_after_a_refused_email_is_the_roles_next_usable_channel() -> None:
    both = recipient(phone="+14155550100", sms_enabled=True)
    assert fallback_channel(both, POLICY, failed="email") == ("sms", "+14155550100")
    assert fallback_channel(both, POLICY, failed="sms") == ("email", "rita@example.test")


def test_there_is_no_fallback_when_the_role_forbids_it_or_nothing_else_is_usable() -> None:
    both = recipient(phone="+14155550100", sms_enabled=True)
    strict = Policy(fallback={"USER": False, "ADMIN": True})
    assert fallback_channel(both, strict, failed="email") is None
    assert (
        fallback_channel(recipient(phone="+14155550100", sms_enabled=False), POLICY, failed="email") is None
    )
    assert fallback_channel(recipient(phone=None, sms_enabled=True), POLICY, failed="email") is None
    admin = recipient(role="ADMIN", phone="+14155550100", sms_enabled=True)  # admins: email only
    assert fallback_channel(admin, POLICY, failed="email") is None


WINDOW = Window(grace=timedelta(seconds=60), max_window=timedelta(minutes=5), settle=timedelta(seconds=1))


def test_the_grace_window_counts_from_the_send_not_from_when_the_notifier_heard_of_it() -> None:
    sent = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    heard = sent + timedelta(seconds=20)
    assert WINDOW.ends(sent_at=sent, now=heard) == sent + timedelta(seconds=60)


def test_a_message_heard_of_after_its_grace_still_waits_the_settle_time() -> None:
    sent = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    heard = sent + timedelta(minutes=10)  # a backlog: its read receipt may be right behind it
    assert WINDOW.ends(sent_at=sent, now=heard) == heard + timedelta(seconds=1)


def test_a_sender_clock_ahead_of_ours_never_lengthens_the_grace() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert WINDOW.ends(sent_at=now + timedelta(minutes=3), now=now) == now + timedelta(seconds=60)


def test_the_settle_time_never_exceeds_the_grace() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    short = Window(grace=timedelta(0), max_window=timedelta(minutes=5), settle=timedelta(seconds=1))
    assert short.ends(sent_at=now - timedelta(hours=1), now=now) == now


def test_a_burst_extends_an_open_window_but_never_past_the_maximum_window() -> None:
    opened = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    current = opened + timedelta(seconds=60)
    sent = opened + timedelta(minutes=1)
    extended = WINDOW.due(current=current, opened_at=opened, sent_at=sent, now=sent + timedelta(seconds=5))
    assert extended == opened + timedelta(minutes=2)  # the later message's own grace end
    now = opened + timedelta(minutes=4, seconds=30)
    capped = WINDOW.due(current=current, opened_at=opened, sent_at=now, now=now)
    assert capped == opened + timedelta(minutes=5)  # not now + 60 s: the maximum window
    deferred = opened + timedelta(hours=1)  # a deferral further out stays
    assert WINDOW.due(current=deferred, opened_at=opened, sent_at=now, now=now) == deferred
