"""Build the gateway from settings: the only place that picks concrete adapters."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.adapters.presence_repo import PresenceRepository
from services.gateway.adapters.store_client import StoreClient
from services.gateway.adapters.tables import outbox
from services.gateway.hub import Hub
from services.gateway.settings import GatewaySettings
from shared.db import asyncpg_dsn, make_engine
from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.messaging.rpc import RpcClient
from shared.messaging.topology import Topology
from shared.outbox import OutboxRelay
from shared.security import TokenVerifier
from shared.settings import CommonSettings

log = get_logger(__name__)


@dataclass
class Gateway:
    engine: AsyncEngine
    broker: Broker
    rpc: RpcClient
    hub: Hub
    relay: OutboxRelay
    verifier: TokenVerifier
    notifier_rpc: RpcClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.broker.start()
        await self.rpc.start()
        await self.notifier_rpc.start()
        try:
            await self.verifier.refresh(force=True)
        except Exception as exc:  # auth may start later: the first handshake fetches the keys
            log.warning("jwks_unavailable", error=type(exc).__name__)
        self.tasks.append(asyncio.create_task(self.relay.run()))
        await self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()  # writes this instance's users offline into the outbox
        with contextlib.suppress(Exception):
            await self.relay.drain_once()  # ...and publishes them before the broker goes
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.rpc.stop()
        await self.notifier_rpc.stop()
        await self.broker.close()
        await self.engine.dispose()


def build_gateway(common: CommonSettings, settings: GatewaySettings) -> Gateway:
    topology = Topology(prefix=common.amqp_prefix, delivery_limit=common.amqp_delivery_limit)
    instance_id = settings.instance_id or uuid.uuid4().hex[:12]
    engine = make_engine(common.database_url, pool_size=settings.db_pool_size)
    broker = Broker(common.amqp_url, topology, service="gateway", heartbeat_s=common.amqp_heartbeat_s)
    rpc = RpcClient(broker, "store", timeout=common.rpc_timeout_s)
    verifier = TokenVerifier(common.jwks_url, issuer=common.jwt_issuer, audience=common.jwt_audience)
    presence = PresenceRepository(
        engine,
        instance_id=instance_id,
        ttl_s=settings.instance_ttl_s,
        events_exchange=topology.events_exchange,
    )
    hub = Hub(
        settings,
        broker=broker,
        store=StoreClient(rpc),
        verifier=verifier,
        presence=presence,
        instance_id=instance_id,
    )
    relay = OutboxRelay(
        engine,
        outbox,
        broker,
        dsn=asyncpg_dsn(common.database_url),
        poll_interval_s=common.outbox_poll_interval_s,
    )
    notifier_rpc = RpcClient(broker, "notifier", timeout=common.rpc_timeout_s)
    return Gateway(engine, broker, rpc, hub, relay, verifier, notifier_rpc)
