"""Notifier settings (env prefix ``NOTIFIER_``); dev defaults work against a local SMTP sink."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Channel = Literal["email", "sms"]


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8003

    # Pending window and send-time rules (seconds).
    grace_window_s: float = Field(default=60.0, ge=0)
    max_window_s: float = Field(default=300.0, ge=0)  # a steady trickle of messages cannot postpone forever
    # The grace counts from the message's send; one heard of late (a backlog) still waits this long.
    settle_s: float = Field(default=1.0, ge=0)
    idle_after_s: float = Field(default=300.0, ge=0)  # an "idle" recipient counts as away after this long
    presence_stale_s: float = Field(
        default=900.0, ge=0
    )  # an "active" older than this is a dead gateway's leftover
    active_recheck_s: float = Field(default=60.0, gt=0)
    cooldowns_s: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [600.0, 3600.0, 86400.0])
    cooldown_reset_s: float = Field(default=172800.0, gt=0)  # a silence this long forgets the escalation
    # Which channels to try, in order, per role; fallback = may use the next one when the first is unusable.
    channels_user: Annotated[list[Channel], NoDecode] = Field(
        default_factory=lambda: list[Channel](["email", "sms"])
    )
    channels_admin: Annotated[list[Channel], NoDecode] = Field(
        default_factory=lambda: list[Channel](["email"])
    )
    fallback_user: bool = True
    fallback_admin: bool = True
    frontend_url: str = "http://localhost:3000"
    digest_max_items: int = 10

    # Workers.
    # Doubled as overflow. The consumer, the scheduler and every send in flight (claim, record)
    # each take one now and then: fewer made sends queue for connections and churn overflow ones.
    db_pool_size: int = Field(default=10, ge=1)
    scheduler_poll_s: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=50, ge=1)
    # Sends in flight (and SMTP sessions kept open): each waits on a few round trips, so at 8 a
    # burst of due digests queued behind each other (W4: 250 msg/s offered).
    send_concurrency: int = Field(default=16, ge=1)
    send_lease_s: float = Field(
        default=120.0, gt=0
    )  # a claimed send not recorded by then is retried elsewhere
    send_attempts: int = Field(default=4, ge=1)
    retry_initial_s: float = Field(default=0.5, ge=0)
    retry_max_s: float = Field(default=10.0, ge=0)
    # Retention: finished notifications (with their attempts), handled event ids and deletion
    # tombstones older than this are pruned by the scheduler loop, a small batch at a time.
    retention_days: float = Field(default=30.0, gt=0)
    retention_batch: int = Field(default=500, ge=1)  # rows per table per pass
    retention_interval_s: float = Field(default=60.0, gt=0)  # between passes that found little
    # Test-only crash points: after_decision | before_send | after_send | after_record.
    failpoint: str | None = None

    # Email (aiosmtplib).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 10.0
    smtp_validate_certs: bool = True
    # Open sessions are reused (at most send_concurrency kept idle): this many mails per session,
    # and none kept idle longer than this (servers drop idle clients after a few minutes).
    smtp_max_messages_per_session: int = Field(default=100, ge=1)
    smtp_idle_s: float = Field(default=30.0, gt=0)
    mail_from: str = "Consultation chat <no-reply@chat.localhost>"
    mail_domain: str = "chat.localhost"  # right-hand side of Message-IDs
    unsubscribe_url: str | None = None  # defaults to <frontend_url>/settings/notifications

    # SMS.
    sms_provider: Literal["log", "vonage"] = "log"
    sms_from: str = "Chat"
    vonage_api_key: str | None = None
    vonage_api_secret: str | None = None
    vonage_rest_host: str = "rest.nexmo.com"  # host[:port]; the SDK always speaks HTTPS
    vonage_ca_bundle: str | None = None  # extra CA for a private endpoint (tests)
    vonage_timeout_s: int = 10
    dev_inbox_size: int = 200

    @field_validator("cooldowns_s", "channels_user", "channels_admin", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_provider(self) -> NotifierSettings:
        if self.sms_provider == "vonage" and not (self.vonage_api_key and self.vonage_api_secret):
            raise ValueError("NOTIFIER_SMS_PROVIDER=vonage needs NOTIFIER_VONAGE_API_KEY and _API_SECRET")
        if not self.cooldowns_s:
            raise ValueError("NOTIFIER_COOLDOWNS_S needs at least one value")
        return self

    @property
    def unsubscribe_link(self) -> str:
        return self.unsubscribe_url or f"{self.frontend_url.rstrip('/')}/settings/notifications"


@lru_cache
def get_settings() -> NotifierSettings:
    return NotifierSettings()
