"""Everything a use case needs, built once per process by ``bootstrap``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.auth.adapters.keys import KeyRing
from services.auth.adapters.ratelimiter import PgRateLimiter
from services.auth.adapters.tables import outbox
from services.auth.domain.passwords import PasswordHashing
from services.auth.domain.ratelimit import Decision, Limit, most_restrictive
from services.auth.service_layer.errors import RateLimited
from services.auth.settings import AuthSettings
from shared.events import EventBase
from shared.logging import get_logger
from shared.outbox import add_to_outbox, event_row
from shared.security import keys_from_jwks
from shared.settings import CommonSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Limits:
    login_ip: Limit
    login_account: Limit
    register_ip: Limit
    refresh_ip: Limit
    reset_ip: Limit
    reset_account: Limit
    otp_phone_daily: Limit
    otp_ip_daily: Limit
    otp_verify_ip: Limit

    @classmethod
    def from_settings(cls, s: AuthSettings) -> Limits:
        day = 24 * 3600
        return cls(
            login_ip=Limit("login-ip", s.login_per_ip, s.login_per_ip_window_s),
            login_account=Limit("login-account", s.login_per_account, s.login_per_account_window_s),
            register_ip=Limit("register-ip", s.register_per_ip, s.register_per_ip_window_s),
            refresh_ip=Limit("refresh-ip", s.refresh_per_ip, s.refresh_per_ip_window_s),
            reset_ip=Limit("reset-ip", s.password_reset_per_ip, s.password_reset_per_ip_window_s),
            reset_account=Limit(
                "reset-account", s.password_reset_per_account, s.password_reset_per_account_window_s
            ),
            otp_phone_daily=Limit("otp-phone", s.otp_daily_per_phone, day),
            otp_ip_daily=Limit("otp-ip", s.otp_daily_per_ip, day),
            otp_verify_ip=Limit("otp-verify-ip", s.otp_verify_per_ip, s.otp_verify_per_ip_window_s),
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthContext:
    settings: AuthSettings
    common: CommonSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    hasher: PasswordHashing
    keys: KeyRing
    secret: bytes
    limiter: PgRateLimiter
    events_exchange: str
    wake_outbox: Callable[[], None] = field(default=lambda: None)

    def __post_init__(self) -> None:
        self.limits = Limits.from_settings(self.settings)
        # Auth verifies its own tokens exactly as other services do: public keys from its JWKS.
        self.public_keys = keys_from_jwks(self.keys.jwks())

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction; the outbox relay is woken right after it commits."""
        async with self.sessions() as session, session.begin():
            yield session
        self.wake_outbox()

    async def emit(self, session: AsyncSession, *events: EventBase) -> None:
        """Queue events in the caller's transaction: they leave only if it commits."""
        await add_to_outbox(session, outbox, [event_row(e, self.events_exchange) for e in events])

    async def take_quotas(self, *quotas: tuple[Limit, str]) -> Decision | None:
        """Take one unit of every quota or none: a refusal gives back what was already taken."""
        taken: list[tuple[Limit, str]] = []
        decisions: list[Decision] = []
        for limit, subject in quotas:
            decision = await self.limiter.acquire(limit, subject)
            if not decision.allowed:
                log.info("quota_exhausted", scope=limit.scope, retry_after_s=decision.reset_s)
                for done in taken:
                    await self.limiter.release(*done)
                raise RateLimited(decision)
            taken.append((limit, subject))
            decisions.append(decision)
        return most_restrictive(decisions)

    async def check_limits(self, *hits: tuple[Limit, str]) -> Decision | None:
        """Count every hit, then refuse with the tightest refusal (so each counter stays honest)."""
        decisions = [await self.limiter.hit(limit, subject) for limit, subject in hits]
        decision = most_restrictive(decisions)
        if decision is not None and not decision.allowed:
            refused = [limit.scope for (limit, _), d in zip(hits, decisions, strict=True) if not d.allowed]
            log.info("rate_limited", scopes=refused, retry_after_s=decision.reset_s)
            raise RateLimited(decision)
        return decision
