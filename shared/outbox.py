"""Transactional outbox: rows written with the change, published after commit by a relay.

The relay claims rows with ``DELETE … FOR UPDATE SKIP LOCKED … RETURNING``
inside a transaction, publishes them with confirms and only then commits, so
a crash before the commit republishes (consumers are idempotent by event id)
and two relays never publish the same row. It is woken in process right after
a commit (``wake``) and across replicas by LISTEN/NOTIFY from a statement
trigger on the table; the poll interval is only a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    insert,
)
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry

from shared.db import driver_transaction
from shared.events import EventBase
from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.messaging.packing import PACKED_HEADER, pack, runs

log = get_logger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("exchange", Text, nullable=False),
        Column("routing_key", Text, nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("message_id", Text, nullable=True),
        Column("persistent", Boolean, nullable=False, server_default="true"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


def outbox_trigger_sql(schema: str) -> list[str]:
    """DDL for the NOTIFY trigger; migrations run it after creating the table."""
    channel = notify_channel(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION {schema}.outbox_notify() RETURNS trigger AS $$
        BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END;
        $$ LANGUAGE plpgsql
        """,
        f"""
        CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.outbox_notify()
        """,
    ]


@dataclass(frozen=True)
class OutboxRow:
    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    persistent: bool = True

    def values(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "body": self.body,
            "message_id": self.message_id,
            "persistent": self.persistent,
        }


def event_row(event: EventBase, exchange: str) -> OutboxRow:
    return OutboxRow(exchange, event.type, event.to_json(), str(event.id))  # type: ignore[attr-defined]


async def add_to_outbox(session: AsyncSession | AsyncConnection, table: Table, rows: list[OutboxRow]) -> None:
    """Write rows in the caller's transaction; they leave only if it commits."""
    if rows:
        await session.execute(insert(table), [row.values() for row in rows])


def _headers(raw: object) -> dict[str, Any] | None:
    """AMQP headers of a row, for outbox tables that carry a ``headers`` JSON column (CC fan-out)."""
    if raw is None:
        return None
    if isinstance(raw, str | bytes):
        decoded: dict[str, Any] = orjson.loads(raw)
        return decoded
    assert isinstance(raw, dict)
    return raw


def _events_in(row: asyncpg.Record) -> int | None:
    """How many events a row carries when it may join a pack: an event (an id, no headers) is
    one, a pack its writer made (no headers but ``PACKED_HEADER``) its count; anything else none."""
    raw = row.get("headers")
    if raw is None:
        return None if row["message_id"] is None else 1
    headers = _headers(raw)
    if row["message_id"] is None and headers is not None and headers.keys() == {PACKED_HEADER}:
        return int(headers[PACKED_HEADER])
    return None


def _size(row: asyncpg.Record) -> int:
    return len(row["body"])


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        broker: Broker,
        *,
        dsn: str,
        poll_interval_s: float = 1.0,
        batch_size: int = 500,
        writers_wake: bool = False,
    ) -> None:
        """``writers_wake``: every writer in this process calls ``wake`` after its commit, so a
        NOTIFY from this process's own connections is ignored (it would only claim nothing)."""
        self.engine = engine
        self.table = table
        self.broker = broker  # its publisher exists only once started: looked up per batch
        self.dsn = dsn
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.schema = table.schema or "public"
        self._wakeup = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        # Only rows addressed to this topology's exchanges: a row another deployment (another
        # prefix) left behind stays put instead of closing the channel with a 404.
        self.exchanges = [broker.topology.events_exchange, broker.topology.delivery_exchange]
        self._claim = f"""
            DELETE FROM {self.schema}.outbox WHERE id IN (
                SELECT id FROM {self.schema}.outbox WHERE exchange = ANY($1::text[]) ORDER BY id
                FOR UPDATE SKIP LOCKED LIMIT $2
            ) RETURNING *
        """  # noqa: S608 - schema is a code constant, never input
        self.published = 0
        self._own_backends: set[int] = set()
        if writers_wake:
            # On checkout, not connect: connections opened before the relay existed count too.
            sa_event.listen(engine.sync_engine, "checkout", self._on_pool_checkout)
            sa_event.listen(engine.sync_engine, "close", self._on_pool_close)

    def _on_pool_checkout(self, _dbapi: object, record: ConnectionPoolEntry, _proxy: object) -> None:
        self._own_backends.add(record.driver_connection.get_server_pid())  # type: ignore[union-attr]

    def _on_pool_close(self, _dbapi: object, record: ConnectionPoolEntry) -> None:
        with contextlib.suppress(Exception):
            self._own_backends.discard(record.driver_connection.get_server_pid())  # type: ignore[union-attr]

    def _notified(self, _conn: object, pid: int, _channel: str, _payload: object) -> None:
        if pid not in self._own_backends:
            self._wakeup.set()

    def wake(self) -> None:
        """Call right after a commit that wrote outbox rows."""
        self._wakeup.set()

    async def run(self) -> None:
        listen_task = asyncio.create_task(self._listen_forever())
        try:
            while True:
                try:
                    # A short batch means the outbox was empty at the claim; anything committed since
                    # has set the wakeup (in process or by NOTIFY), so no extra empty claim is needed.
                    while await self.drain_once() >= self.batch_size:
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox_relay_error", error=f"{type(exc).__name__}: {exc}")
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands
                # as the wakeup fires, and the relay then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval_s):
                        await self._wakeup.wait()
                self._wakeup.clear()
        finally:
            listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listen_task
            if self._listener is not None and not self._listener.is_closed():
                await self._listener.close()

    async def drain_once(self) -> int:
        """Claim, publish and delete one batch; returns how many rows left the outbox."""
        async with driver_transaction(self.engine) as pg:
            claimed = await pg.fetch(self._claim, self.exchanges, self.batch_size)
            if not claimed:
                return 0
            rows = sorted(claimed, key=lambda r: r["id"])
            events = {row["id"]: _events_in(row) for row in rows}

            def pack_key(row: asyncpg.Record) -> tuple[str, str, bool] | None:
                """Events and packs with the same exchange, key and durability pack together."""
                if events[row["id"]] is None:
                    return None
                return (row["exchange"], row["routing_key"], row["persistent"])

            # Confirms in flight together; frames still reach the broker in id order.
            await asyncio.gather(
                *(
                    self._publish(run, events)
                    for run in runs(rows, pack_key, _size, lambda row: events[row["id"]] or 1)
                )
            )
        self.published += len(rows)
        return len(rows)

    async def _publish(self, run: list[asyncpg.Record], events: dict[int, int | None]) -> None:
        """One row as it is, or a run of events and packs as one pack (``shared.messaging.packing``)."""
        first = run[0]
        if len(run) == 1:
            body, message_id = bytes(first["body"]), first["message_id"]
            headers = _headers(first.get("headers"))
        else:
            # A pack's events go in without its brackets: a pack of packs is one flat array.
            members = [bytes(r["body"]) if events[r["id"]] == 1 else bytes(r["body"])[1:-1] for r in run]
            body, message_id = pack(members), None
            headers = {PACKED_HEADER: sum(events[r["id"]] or 0 for r in run)}
        await self.broker.publisher.publish(
            first["exchange"],
            first["routing_key"],
            body,
            message_id=message_id,
            persistent=first["persistent"],
            headers=headers,
        )

    async def _listen_forever(self) -> None:
        while True:
            try:
                self._listener = await asyncpg.connect(self.dsn)
                await self._listener.add_listener(notify_channel(self.schema), self._notified)
                self._wakeup.set()  # catch up on anything missed while not listening
                while not self._listener.is_closed():
                    await asyncio.sleep(self.poll_interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("outbox_listen_retry", error=type(exc).__name__)
            await asyncio.sleep(self.poll_interval_s)
