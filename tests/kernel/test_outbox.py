"""The outbox publishes after commit, never for a rollback, and each row once across relays."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import asyncpg_dsn, make_engine
from shared.events import MessageRead, MessageReadPayload, parse_event_pack
from shared.messaging.connection import Broker
from shared.messaging.packing import MAX_PACK_EVENTS, PACKED_HEADER, is_packed, pack
from shared.outbox import OutboxRelay, add_to_outbox, event_row, notify_channel

pytestmark = pytest.mark.timeout(60)


def read_event(seq: int) -> MessageRead:
    return MessageRead(
        payload=MessageReadPayload(conversation_id=uuid.uuid4(), reader_id=uuid.uuid4(), seq=seq)
    )


class Collector:
    """Event ids in arrival order, unpacking runs the relay packed into one message."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.ids: list[str] = []
        self.messages = 0

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.messages += 1
        self.bodies.append(message.body)
        if is_packed(message.headers):
            self.ids.extend(str(event.id) for event in parse_event_pack(message.body))
        else:
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


def packed_row(part: list[MessageRead], exchange: str) -> dict[str, object]:
    """An outbox row holding several events, as the store writes a batch's events."""
    return {
        **event_row(part[0], exchange).values(),
        "body": pack([e.to_json() for e in part]),
        "message_id": None,
        "headers": {PACKED_HEADER: len(part)},
    }


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


async def outbox_settles_at(engine: AsyncEngine, outbox: Table, expected: int, timeout: float = 10.0) -> int:
    """The rows' count once it reaches `expected`, or the last count seen when it never does.

    The relay deletes a batch only after the broker confirms it, so a consumer can hold every
    event while the delete is still in flight: the count is awaited, never read once.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while (count := await outbox_count(engine, outbox)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    return count


async def relay_rows(
    engine: AsyncEngine,
    table: Table,
    broker: Broker,
    collected: Collector,
    database_url: str,
    rows: list[dict[str, object]],
    events: int,
) -> None:
    """Insert rows as written, and run a relay until ``events`` events arrived and the table is empty."""
    relay = make_relay(engine, table, broker, database_url)
    async with running(relay):
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows)
        relay.wake()
        await collected.wait_for(events)
        assert await outbox_settles_at(engine, table, 0) == 0


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
        # While the relay runs: it deletes the rows after the broker's confirms.
        assert await outbox_settles_at(engine, outbox, 0) == 0
    assert collected.ids == [str(event.id)]


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
        assert await outbox_settles_at(engine, outbox, 0) == 0
        await asyncio.sleep(0.3)
    assert sorted(collected.ids) == sorted(str(e.id) for e in events)
    assert len(collected.ids) == len(set(collected.ids))
    assert all(r.published > 0 for r in relays), [r.published for r in relays]


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
        assert await outbox_settles_at(engine, outbox, 1) == 1  # the foreign row is left for its own relay
        await asyncio.sleep(0.3)
    assert collected.ids == [str(ours.id)]
    assert await outbox_count(engine, outbox) == 1


async def test_a_committed_run_of_one_event_type_travels_packed_and_every_event_keeps_its_id_and_order(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    events = [read_event(i) for i in range(MAX_PACK_EVENTS + 20)]
    relay = make_relay(engine, outbox, broker, database_url)
    async with running(relay):
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox, [event_row(e, broker.topology.events_exchange) for e in events])
        relay.wake()
        await collected.wait_for(len(events))
        assert await outbox_settles_at(engine, outbox, 0) == 0
    assert collected.ids == [str(e.id) for e in events]
    assert collected.messages == 2  # one full pack and the rest


async def test_a_relay_whose_writers_wake_it_ignores_its_own_notifies_but_not_another_process(
    engine: AsyncEngine, outbox: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    relay = OutboxRelay(
        engine, outbox, broker, dsn=asyncpg_dsn(database_url), poll_interval_s=30.0, writers_wake=True
    )
    other = make_engine(database_url, pool_size=1)  # another process's connections
    own, foreign, woken = read_event(1), read_event(2), read_event(3)
    exchange = broker.topology.events_exchange
    try:
        async with running(relay):
            await asyncio.sleep(0.3)  # listening
            async with engine.begin() as conn:
                await add_to_outbox(conn, outbox, [event_row(own, exchange)])
            await asyncio.sleep(0.5)
            assert collected.ids == []  # our own commit's NOTIFY claims nothing: our writer wakes us
            async with other.begin() as conn:
                await add_to_outbox(conn, outbox, [event_row(foreign, exchange)])
            await collected.wait_for(2, timeout=10)  # another process's NOTIFY does (and takes both)
            async with engine.begin() as conn:
                await add_to_outbox(conn, outbox, [event_row(woken, exchange)])
            relay.wake()
            await collected.wait_for(3, timeout=10)
    finally:
        await other.dispose()
    assert collected.ids == [str(own.id), str(foreign.id), str(woken.id)]


async def test_packs_a_writer_made_join_single_events_of_their_key_as_one_flat_pack_in_order(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    events = [read_event(i) for i in range(6)]
    exchange = broker.topology.events_exchange
    rows = [
        {**event_row(events[0], exchange).values(), "headers": None},
        packed_row(events[1:3], exchange),
        {**event_row(events[3], exchange).values(), "headers": None},
        packed_row(events[4:6], exchange),
    ]
    await relay_rows(engine, outbox_with_headers, broker, collected, database_url, rows, len(events))
    assert collected.ids == [str(e.id) for e in events]
    assert collected.messages == 1
    assert len(parse_event_pack(collected.bodies[0])) == 6  # one flat array, not a pack of packs


async def test_a_pack_never_grows_past_the_event_limit_when_its_rows_are_packs(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    per_row = MAX_PACK_EVENTS // 2 + 1  # two such rows exceed the limit together
    events = [read_event(i) for i in range(2 * per_row)]
    exchange = broker.topology.events_exchange
    rows = [packed_row(part, exchange) for part in (events[:per_row], events[per_row:])]
    await relay_rows(engine, outbox_with_headers, broker, collected, database_url, rows, len(events))
    assert collected.ids == [str(e.id) for e in events]
    assert collected.messages == 2


async def insert_leased(
    engine: AsyncEngine, table: Table, events: list[MessageRead], exchange: str, lease_s: float
) -> tuple[list[dict[str, object]], list[int]]:
    """Rows as the send path writes them: under a lease, their ids returned for a hand-over."""
    rows: list[dict[str, object]] = [{**event_row(e, exchange).values(), "headers": None} for e in events]
    return await insert_leased_rows(engine, table, rows, lease_s)


async def insert_leased_rows(
    engine: AsyncEngine, table: Table, rows: list[dict[str, object]], lease_s: float
) -> tuple[list[dict[str, object]], list[int]]:
    async with engine.begin() as conn:
        until = (await conn.execute(select(func.now()))).scalar_one() + timedelta(seconds=lease_s)
        result = await conn.execute(
            insert(table).returning(table.c.id), [{**row, "leased_until": until} for row in rows]
        )
        ids = sorted(result.scalars())
    return rows, ids


async def test_only_rows_without_a_lease_notify_the_relays(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, database_url: str
) -> None:
    exchange = broker.topology.events_exchange
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(
        notify_channel(outbox_with_headers.schema or "public"), lambda *args: heard.put_nowait(args[2])
    )
    try:
        await insert_leased(engine, outbox_with_headers, [read_event(1), read_event(2)], exchange, lease_s=60)
        await asyncio.sleep(0.3)
        assert heard.empty()  # the writer publishes leased rows itself: no relay is woken for them
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox_with_headers, [event_row(read_event(3), exchange)])
        await asyncio.wait_for(heard.get(), 5)
    finally:
        await listener.close()


async def test_rows_under_a_lease_are_claimed_by_no_relay_until_it_ends(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    exchange = broker.topology.events_exchange
    leased, free = read_event(1), read_event(2)
    relay = make_relay(engine, outbox_with_headers, broker, database_url, poll=0.2)
    async with running(relay):
        await insert_leased(engine, outbox_with_headers, [leased], exchange, lease_s=2.0)
        async with engine.begin() as conn:
            await add_to_outbox(conn, outbox_with_headers, [event_row(free, exchange)])
        relay.wake()
        await collected.wait_for(1)
        await asyncio.sleep(0.8)  # four polls later the lease still holds
        assert collected.ids == [str(free.id)]
        await collected.wait_for(2, timeout=10)  # the writer never handed it over: published after
        assert await outbox_settles_at(engine, outbox_with_headers, 0) == 0
    assert collected.ids == [str(free.id), str(leased.id)]


async def test_rows_handed_over_are_published_from_memory_once_and_then_deleted(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    events = [read_event(i) for i in range(5)]
    relay = make_relay(engine, outbox_with_headers, broker, database_url, poll=0.1)
    async with running(relay):
        rows, ids = await insert_leased(
            engine, outbox_with_headers, events, broker.topology.events_exchange, lease_s=60.0
        )
        relay.hand_over(rows[:2], ids[:2])
        relay.hand_over(rows[2:], ids[2:])
        await collected.wait_for(len(events))
        assert await outbox_settles_at(engine, outbox_with_headers, 0) == 0
        await asyncio.sleep(0.5)  # polls meanwhile find nothing left to publish again
    assert collected.ids == [str(e.id) for e in events]
    assert collected.messages == 1  # both hand-overs travelled as one pack


async def test_a_hand_over_that_fails_to_publish_leaves_its_rows_for_the_claim_after_the_lease(
    engine: AsyncEngine,
    outbox_with_headers: Table,
    broker: Broker,
    collected: Collector,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [read_event(i) for i in range(3)]
    relay = make_relay(engine, outbox_with_headers, broker, database_url, poll=0.2)
    publish_rows = relay._publish_rows
    failures: list[int] = []

    async def broker_gone_once(rows: Any) -> None:
        if not failures:
            failures.append(len(rows))
            raise ConnectionError("broker gone")
        await publish_rows(rows)

    monkeypatch.setattr(relay, "_publish_rows", broker_gone_once)
    async with running(relay):
        rows, ids = await insert_leased(
            engine, outbox_with_headers, events, broker.topology.events_exchange, lease_s=1.0
        )
        relay.hand_over(rows, ids)
        await asyncio.sleep(0.5)
        assert failures == [3] and collected.ids == []
        assert await outbox_count(engine, outbox_with_headers) == 3  # nothing deleted, nothing lost
        await collected.wait_for(len(events), timeout=10)
        assert await outbox_settles_at(engine, outbox_with_headers, 0) == 0
    assert collected.ids == [str(e.id) for e in events]


async def test_deliveries_go_out_at_once_while_events_linger_to_travel_as_one_pack(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    topo = broker.topology
    channel = await broker.consumer_channel()
    frames = await channel.declare_queue(exclusive=True)
    await frames.bind(topo.delivery_exchange, routing_key="user.kt")
    arrived: list[bytes] = []

    async def on_frame(message: AbstractIncomingMessage) -> None:
        arrived.append(message.body)
        await message.ack()

    await frames.consume(on_frame)
    relay = OutboxRelay(
        engine, outbox_with_headers, broker, dsn=asyncpg_dsn(database_url), event_linger_s=2.0
    )
    events = [read_event(i) for i in range(3)]
    try:
        async with running(relay):
            for i, event in enumerate(events):
                delivery = {
                    "exchange": topo.delivery_exchange,
                    "routing_key": "user.kt",
                    "body": b'{"n":%d}' % i,
                    "message_id": None,
                    "persistent": False,
                    "headers": None,
                }
                row = {**event_row(event, topo.events_exchange).values(), "headers": None}
                relay.hand_over(*await insert_leased_rows(engine, outbox_with_headers, [delivery, row], 60))
            deadline = asyncio.get_running_loop().time() + 5
            while len(arrived) < 3 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert arrived == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
            assert collected.ids == []  # the events still linger
            await collected.wait_for(3)
            assert await outbox_settles_at(engine, outbox_with_headers, 0) == 0
    finally:
        await channel.close()
    assert collected.ids == [str(e.id) for e in events]
    assert collected.messages == 1  # three hand-overs' events, one pack


async def test_a_forced_publish_sends_lingering_events_at_once(
    engine: AsyncEngine, outbox_with_headers: Table, broker: Broker, collected: Collector, database_url: str
) -> None:
    relay = OutboxRelay(
        engine, outbox_with_headers, broker, dsn=asyncpg_dsn(database_url), event_linger_s=60.0
    )
    events = [read_event(i) for i in range(2)]
    relay.hand_over(
        *await insert_leased(engine, outbox_with_headers, events, broker.topology.events_exchange, 60)
    )
    assert await relay.publish_handed() == 0  # lingering
    assert await relay.publish_handed(force=True) == 2  # shutdown: everything goes now
    await relay.deleted()
    await collected.wait_for(2)
    assert await outbox_count(engine, outbox_with_headers) == 0
