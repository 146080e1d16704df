"""The one place that picks concrete adapters: builds the auth context from settings."""

from __future__ import annotations

import asyncio
import contextlib

from services.auth.adapters.keys import load_key_ring, load_secret
from services.auth.adapters.ratelimiter import PgRateLimiter
from services.auth.adapters.tables import outbox
from services.auth.domain.passwords import Argon2Parameters, PasswordHashing
from services.auth.service_layer.context import AuthContext
from services.auth.settings import AuthSettings
from shared.db import asyncpg_dsn, make_engine, make_sessionmaker
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings


def topology_from(common: CommonSettings) -> Topology:
    return Topology(prefix=common.amqp_prefix, delivery_limit=common.amqp_delivery_limit)


def build_context(settings: AuthSettings, common: CommonSettings, *, pool_size: int = 10) -> AuthContext:
    """Engine, keys, hasher and rate limiter; no broker (the CLI needs none: events go to the outbox)."""
    generate = settings.is_development
    keys = load_key_ring(
        directory=settings.keys_dir,
        private_key_pem=settings.jwt_private_key,
        private_key_file=settings.jwt_private_key_file,
        active_kid=settings.jwt_active_kid,
        generate=generate,
    )
    secret = load_secret(directory=settings.keys_dir, configured=settings.secret_key, generate=generate)
    engine = make_engine(common.database_url, pool_size=pool_size)
    hasher = PasswordHashing(
        Argon2Parameters(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
    )
    return AuthContext(
        settings=settings,
        common=common,
        engine=engine,
        sessions=make_sessionmaker(engine),
        hasher=hasher,
        keys=keys,
        secret=secret,
        limiter=PgRateLimiter(engine, enabled=settings.rate_limit_enabled),
        events_exchange=topology_from(common).events_exchange,
    )


class Runtime:
    """Long-lived resources of a running auth process, started and stopped by the app's lifespan."""

    def __init__(self, context: AuthContext, broker: Broker) -> None:
        self.context = context
        self.broker = broker
        self.relay: OutboxRelay | None = None
        self._relay_task: asyncio.Task[None] | None = None
        context.wake_outbox = self._wake

    def _wake(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def start(self) -> None:
        await self.broker.start()
        common = self.context.common
        self.relay = OutboxRelay(
            self.context.engine,
            outbox,
            self.broker,
            dsn=asyncpg_dsn(common.database_url),
            poll_interval_s=common.outbox_poll_interval_s,
        )
        self._relay_task = asyncio.create_task(self.relay.run(), name="auth-outbox-relay")

    async def stop(self) -> None:
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self.broker.close()
        await self.context.engine.dispose()


def build_runtime(settings: AuthSettings, common: CommonSettings) -> Runtime:
    broker = Broker(
        common.amqp_url,
        topology_from(common),
        service="auth",
        heartbeat_s=common.amqp_heartbeat_s,
        prefetch=common.amqp_prefetch,
    )
    return Runtime(build_context(settings, common), broker)
