"""Prometheus metrics of the notifier (served on /metrics by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENT = Counter("notifier_sent_total", "Notifications handed to a provider", ["kind", "channel"])
FAILED = Counter("notifier_failed_total", "Notifications given up on", ["kind", "channel", "reason"])
RETRIED = Counter("notifier_retried_total", "Send attempts retried after a transient error", ["channel"])
SUPPRESSED = Counter(
    "notifier_suppressed_total",
    "Pending notifications not sent (now or yet), by reason",
    ["reason"],  # read, deleted, active, cooldown, preference, quiet_hours, unknown_recipient, expired
)
MESSAGE_TO_SEND = Histogram(
    "notifier_message_to_send_seconds",
    "From the oldest unread message (or the request) to the provider's acceptance",
    ["kind", "channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 86400),
)
