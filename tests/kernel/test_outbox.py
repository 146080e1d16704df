"""The outbox publishes after commit, never for a rollback, and each row once across relays."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import asyncpg_dsn
from shared.events import MessageRead, MessageReadPayload
from shared.messaging.connection import Broker
from shared.outbox import OutboxRelay, add_to_outbox, event_row

pytestmark = pytest.mark.timeout(60)


def read_event(seq: int) -> MessageRead:
    return MessageRead(
        payload=MessageReadPayload(conversation_id=uuid.uuid4(), reader_id=uuid.uuid4(), seq=seq)
    )


class Collector:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.ids: list[str] = []

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.bodies.append(message.body)
        self.ids.append(message.message_id or "")
        await message.ack()

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        async def poll() -> None:
            while len(self.ids) < count:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def collected(broker: Broker) -> AsyncIterator[Collector]:
    channel = await broker.consumer_channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(broker.topology.events_exchange, routing_key="message.read")
    collector = Collector()
    await queue.consume(collector)
    yield collector
    await channel.close()


def make_relay(
    engine: AsyncEngine, outbox: Table, broker: Broker, database_url: str, **kw: float
) -> OutboxRelay:
    return OutboxRelay(
        engine,
        outbox,
        broker,
        dsn=asyncpg_dsn(database_url),
        poll_interval_s=kw.get("poll", 30.0),
        batch_size=int(kw.get("batch", 500)),
    )


@contextlib.asynccontextmanager
async def running(*relays: OutboxRelay) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def outbox_count(engine: AsyncEngine, outbox: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def test_committed_row_is_published_after_commit_and_removed(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    relay = make_relay(engine, outbox, broker, database_url)
    event = read_event(1)
    async with running(relay):
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox, [event_row(event, broker.topology.events_exchange)])
            await asyncio.sleep(0.2)
            assert collected.ids == []  # nothing leaves before the commit
        # No wake() call and a 30 s poll: only the NOTIFY from the commit can wake the relay.
        await collected.wait_for(1, timeout=10)
    assert collected.ids == [str(event.id)]
    assert await outbox_count(engine, outbox) == 0


async def test_rolled_back_transaction_publishes_nothing(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    relay = make_relay(engine, outbox, broker, database_url)
    rolled_back, committed = read_event(1), read_event(2)
    async with running(relay):
        with contextlib.suppress(RuntimeError):
            async with engine.begin() as conn:
                await add_to_outbox(conn, outbox, [event_row(rolled_back, broker.topology.events_exchange)])
                raise RuntimeError("business rule failed")
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox, [event_row(committed, broker.topology.events_exchange)])
        relay.wake()
        await collected.wait_for(1)
        await asyncio.sleep(0.3)
    assert collected.ids == [str(committed.id)]


async def test_two_relays_publish_each_row_exactly_once(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    events = [read_event(i) for i in range(600)]
    relays = [make_relay(engine, outbox, broker, database_url, poll=0.05, batch=25) for _ in range(2)]
    async with running(*relays):
        for start in range(0, len(events), 50):
            async with engine.begin() as conn:
                await add_to_outbox(
                    conn,
                    outbox,
                    [event_row(e, broker.topology.events_exchange) for e in events[start : start + 50]],
                )
        await collected.wait_for(len(events), timeout=30)
        await asyncio.sleep(0.3)
    assert sorted(collected.ids) == sorted(str(e.id) for e in events)
    assert len(collected.ids) == len(set(collected.ids))
    assert all(r.published > 0 for r in relays), [r.published for r in relays]
    assert await outbox_count(engine, outbox) == 0


async def test_rows_for_another_deployments_exchange_stay_put_and_block_nothing(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    relay = make_relay(engine, outbox, broker, database_url)
    foreign, ours = read_event(1), read_event(2)
    async with engine.begin() as conn:
        await add_to_outbox(conn, outbox, [event_row(foreign, "other-prefix.events")])
        await add_to_outbox(conn, outbox, [event_row(ours, broker.topology.events_exchange)])
    async with running(relay):
        relay.wake()
        await collected.wait_for(1)
        await asyncio.sleep(0.3)
    assert collected.ids == [str(ours.id)]
    assert await outbox_count(engine, outbox) == 1  # the foreign row is left for its own relay
