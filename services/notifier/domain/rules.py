"""When to notify whom, and how: decided at send time from the projections, never from timers."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.notifier.domain.model import (
    Channel,
    Decision,
    Defer,
    Policy,
    Presence,
    Recipient,
    Send,
    Suppress,
    Thread,
)


def active_until(presence: Presence | None, now: datetime, policy: Policy) -> datetime | None:
    """Until when the recipient counts as present (recheck then); ``None`` means away now."""
    if presence is None or presence.state == "offline":
        return None
    if presence.state == "active":
        if now - presence.last_seen >= policy.presence_stale:
            return None  # a gateway that died without saying goodbye
        return now + policy.active_recheck
    # idle: a tab left open still gets notified once the idle time has passed
    away_at = presence.last_seen + policy.idle_after
    return away_at if away_at > now else None


def effective_level(level: int, last_notified_at: datetime | None, now: datetime, policy: Policy) -> int:
    """The escalation level, forgotten after a long silence."""
    if last_notified_at is None or now - last_notified_at >= policy.cooldown_reset:
        return 0
    return level


def cooldown_after(level: int, policy: Policy) -> timedelta:
    """The gap required after the ``level``-th notification since the last reset (0 = none sent)."""
    if level <= 0:
        return timedelta(0)
    return policy.cooldowns[min(level, len(policy.cooldowns)) - 1]


def next_allowed_at(thread: Thread, now: datetime, policy: Policy) -> datetime | None:
    """The earliest time the next notification may go; ``None`` when it may go now."""
    if thread.last_notified_at is None:
        return None
    level = effective_level(thread.cooldown_level, thread.last_notified_at, now, policy)
    allowed = thread.last_notified_at + cooldown_after(level, policy)
    return allowed if allowed > now else None


def level_after_read(level: int) -> int:
    """Reading resets the escalation to the base cooldown (never below one step after a send)."""
    return min(level, 1)


def parse_clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_hours_end(now: datetime, start: str | None, end: str | None, timezone: str) -> datetime | None:
    """The end of the quiet period ``now`` falls in (aware UTC-comparable), or ``None`` outside one."""
    if not start or not end:
        return None
    try:
        begin, finish = parse_clock(start), parse_clock(end)
    except ValueError:
        return None
    if begin == finish:
        return None
    zone = _zone(timezone)
    local = now.astimezone(zone)
    clock = local.time()
    if begin < finish:
        inside = begin <= clock < finish
    else:  # overnight, e.g. 22:00-07:00
        inside = clock >= begin or clock < finish
    if not inside:
        return None
    day = local.date()
    if begin > finish and clock >= begin:
        day = day + timedelta(days=1)
    # Wall-clock end in the recipient's zone (fold=0 picks the first of a repeated hour).
    return datetime.combine(day, finish, tzinfo=zone)


def usable_channels(recipient: Recipient) -> dict[Channel, str]:
    """Channels with a verified destination that the recipient left enabled."""
    found: dict[Channel, str] = {}
    if recipient.email and recipient.email_enabled:
        found["email"] = recipient.email
    if recipient.phone and recipient.sms_enabled:
        found["sms"] = recipient.phone
    return found


def channel_order(recipient: Recipient, policy: Policy) -> tuple[Channel, ...]:
    return policy.channels.get(recipient.role) or policy.channels.get("USER") or ("email",)


def choose_channel(recipient: Recipient, policy: Policy) -> tuple[Channel, str] | None:
    """The first usable channel of the role's order; without fallback only the first is considered."""
    order = channel_order(recipient, policy)
    usable = usable_channels(recipient)
    candidates = order if policy.fallback.get(recipient.role, True) else order[:1]
    for channel in candidates:
        if channel in usable:
            return channel, usable[channel]
    return None


def fallback_channel(recipient: Recipient, policy: Policy, *, failed: str) -> tuple[Channel, str] | None:
    """Where a digest goes after ``failed`` refused it for good: the role's next usable channel.

    ``None`` when the role allows no fallback or no other channel of its order is usable now.
    Only for a clear refusal: after an ambiguous outcome the first copy may have arrived.
    """
    if not policy.fallback.get(recipient.role, True):
        return None
    usable = usable_channels(recipient)
    for channel in channel_order(recipient, policy):
        if channel != failed and channel in usable:
            return channel, usable[channel]
    return None


def decide(
    *,
    now: datetime,
    recipient: Recipient | None,
    presence: Presence | None,
    thread: Thread,
    policy: Policy,
) -> Decision:
    """Send one digest, drop the pending work for good, or look again later (never drop a deferral)."""
    unread = thread.visible_unread()
    if not unread:
        live = [m for m in thread.unread if m.seq > thread.read_seq]
        return Suppress("deleted" if live else "read")
    if thread.silence_until_read and thread.notified_seq > thread.read_seq:
        return Suppress("silenced")  # told once already; quiet until they read
    if recipient is None:
        opened = thread.opened_at or now
        if now - opened < policy.unknown_recipient_give_up:
            return Defer(now + policy.unknown_recipient_retry, "unknown_recipient")
        return Suppress("unknown_recipient")
    present = active_until(presence, now, policy)
    if present is not None:
        return Defer(present, "active")
    channel = choose_channel(recipient, policy)
    if channel is None:
        return Suppress("preference")
    allowed = next_allowed_at(thread, now, policy)
    if allowed is not None:
        return Defer(allowed, "cooldown")
    quiet_end = quiet_hours_end(now, recipient.quiet_start, recipient.quiet_end, recipient.timezone)
    if quiet_end is not None:
        return Defer(quiet_end, "quiet_hours")
    return Send(channel[0], channel[1], unread)
