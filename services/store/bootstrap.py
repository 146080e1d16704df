"""Build the store's workers from settings: the only place that picks concrete adapters."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.adapters.tables import outbox
from services.store.entrypoints.consumers import StoreConsumer
from services.store.entrypoints.rpc import handlers
from services.store.service import StoreService
from services.store.settings import StoreSettings
from shared.db import asyncpg_dsn, make_engine
from shared.messaging.connection import Broker
from shared.messaging.rpc import RpcServer
from shared.messaging.topology import Topology
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings


@dataclass
class Store:
    engine: AsyncEngine
    broker: Broker
    service: StoreService
    relay: OutboxRelay
    rpc: RpcServer
    consumer: StoreConsumer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.broker.start()
        self.tasks.append(asyncio.create_task(self.relay.run()))
        await self.consumer.start()
        await self.rpc.start()

    async def stop(self) -> None:
        await self.rpc.stop()
        await self.consumer.stop()
        # What the last send batches handed over goes out now, not after their lease.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.relay.publish_handed(force=True)
                await self.relay.deleted()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.close()
        await self.engine.dispose()


def build_store(common: CommonSettings, settings: StoreSettings) -> Store:
    topology = Topology(prefix=common.amqp_prefix, delivery_limit=common.amqp_delivery_limit)
    engine = make_engine(common.database_url, pool_size=settings.db_pool_size)
    broker = Broker(
        common.amqp_url,
        topology,
        service="store",
        heartbeat_s=common.amqp_heartbeat_s,
        prefetch=settings.rpc_prefetch,
    )
    relay = OutboxRelay(
        engine,
        outbox,
        broker,
        dsn=asyncpg_dsn(common.database_url),
        poll_interval_s=common.outbox_poll_interval_s,
        writers_wake=True,  # the service and the consumer wake it after every commit
        event_linger_s=settings.outbox_event_linger_s,
    )
    service = StoreService(engine, settings, topology, on_commit=relay.wake, hand_over=relay.hand_over)
    consumer = StoreConsumer(
        broker, engine, service.rows, fanout_cap=settings.presence_fanout_cap, on_commit=relay.wake
    )
    rpc = RpcServer(broker, "store", handlers(service))
    return Store(engine, broker, service, relay, rpc, consumer)
