"""Rate-limit counters in PostgreSQL, shared by every replica: one atomic upsert per hit."""

from __future__ import annotations

import random
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.domain.ratelimit import Decision, Limit, decide, window_start
from shared.logging import get_logger

log = get_logger(__name__)

_HIT = text(
    """
    INSERT INTO auth.rate_limits AS r (key, window_start, count, expires_at)
    VALUES (:key, :window_start, 1, to_timestamp(:expires))
    ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + 1
    RETURNING count
    """
)
# A quota: counts only what is granted, so refused requests do not use it up.
_ACQUIRE = text(
    """
    INSERT INTO auth.rate_limits AS r (key, window_start, count, expires_at)
    VALUES (:key, :window_start, 1, to_timestamp(:expires))
    ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + 1 WHERE r.count < :limit
    RETURNING count
    """
)
_RELEASE = text(
    """
    UPDATE auth.rate_limits SET count = count - 1
    WHERE key = :key AND window_start = :window_start AND count > 0
    """
)
# Old windows go away without a cron: now and then a hit sweeps a bounded batch of expired rows.
_SWEEP = (
    text(
        """
        DELETE FROM auth.rate_limits WHERE ctid IN (
            SELECT ctid FROM auth.rate_limits WHERE expires_at < now() LIMIT 1000
        )
        """
    ),
    text(
        """
        DELETE FROM auth.cooldowns WHERE ctid IN (
            SELECT ctid FROM auth.cooldowns WHERE until < now() LIMIT 1000
        )
        """
    ),
    # Dead credentials go the same way: an expired token is refused whether or not its row exists.
    text(
        """
        DELETE FROM auth.refresh_tokens WHERE ctid IN (
            SELECT ctid FROM auth.refresh_tokens WHERE expires_at < now() - interval '1 day' LIMIT 1000
        )
        """
    ),
    text(
        """
        DELETE FROM auth.phone_verifications WHERE ctid IN (
            SELECT ctid FROM auth.phone_verifications WHERE expires_at < now() - interval '1 day' LIMIT 1000
        )
        """
    ),
    text(
        """
        DELETE FROM auth.action_tokens WHERE ctid IN (
            SELECT ctid FROM auth.action_tokens WHERE expires_at < now() - interval '1 day' LIMIT 1000
        )
        """
    ),
)


class PgRateLimiter:
    def __init__(self, engine: AsyncEngine, *, enabled: bool = True, sweep_probability: float = 0.01) -> None:
        self.engine = engine
        self.enabled = enabled
        self.sweep_probability = sweep_probability

    async def hit(self, limit: Limit, subject: str) -> Decision:
        """Count one hit for ``subject`` under ``limit`` and judge it."""
        now = time.time()
        if not self.enabled or limit.limit <= 0:
            return Decision(allowed=True, limit=max(limit.limit, 0), remaining=max(limit.limit, 0), reset_s=0)
        start = window_start(now, limit.window_s)
        async with self.engine.begin() as conn:
            count = (
                await conn.execute(
                    _HIT,
                    {"key": limit.key(subject), "window_start": start, "expires": start + limit.window_s},
                )
            ).scalar_one()
        if random.random() < self.sweep_probability:
            await self.sweep()
        return decide(int(count), limit, now)

    async def acquire(self, limit: Limit, subject: str) -> Decision:
        """Take one unit of a quota (e.g. codes per day); a refusal does not count."""
        now = time.time()
        if not self.enabled:
            return Decision(allowed=True, limit=limit.limit, remaining=limit.limit, reset_s=0)
        start = window_start(now, limit.window_s)
        async with self.engine.begin() as conn:
            count = (
                await conn.execute(
                    _ACQUIRE,
                    {
                        "key": limit.key(subject),
                        "window_start": start,
                        "expires": start + limit.window_s,
                        "limit": limit.limit,
                    },
                )
            ).scalar()
        if count is None or limit.limit <= 0:
            return decide(limit.limit + 1, limit, now)
        return decide(int(count), limit, now)

    async def release(self, limit: Limit, subject: str) -> None:
        """Give back a unit taken by ``acquire`` when the action did not happen after all."""
        if not self.enabled:
            return
        start = window_start(time.time(), limit.window_s)
        async with self.engine.begin() as conn:
            await conn.execute(_RELEASE, {"key": limit.key(subject), "window_start": start})

    async def sweep(self) -> None:
        try:
            async with self.engine.begin() as conn:
                for statement in _SWEEP:
                    await conn.execute(statement)
        except Exception as exc:  # sweeping is best effort; the next hit tries again
            log.warning("rate_limit_sweep_failed", error=type(exc).__name__)
