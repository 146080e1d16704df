"""Transactional outbox: rows written with the change, published after commit by a relay.

The relay claims rows with ``DELETE … FOR UPDATE SKIP LOCKED … RETURNING``
inside a transaction, publishes them with confirms and only then commits, so
a crash before the commit republishes (consumers are idempotent by event id)
and two relays never publish the same row. It is woken in process right after
a commit (``wake``) and across replicas by LISTEN/NOTIFY from a statement
trigger on the table; the poll interval is only a safety net.

A hot writer may instead write its rows with a lease (``leased_until``) and hand them to its
own process's relay after the commit (``hand_over``): they are published from memory and then
deleted by id, without a claim transaction. No relay claims a leased row before its lease
ends, so the rows of a writer that died before publishing go out once it has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
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

from shared.db import driver_connection, driver_transaction
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


def outbox_trigger_sql(schema: str, *, leased: bool = False) -> list[str]:
    """DDL for the NOTIFY trigger; migrations run it after creating the table.

    ``leased``: the table has ``leased_until``, and only rows without a lease notify. A leased
    row is its writer's to publish and no relay may claim it before the lease ends, so waking
    every relay for it (a NOTIFY per send commit, queued and signalled by PostgreSQL) buys nothing.
    """
    channel = notify_channel(schema)
    when = "FOR EACH ROW WHEN (NEW.leased_until IS NULL)" if leased else "FOR EACH STATEMENT"
    return [
        f"""
        CREATE OR REPLACE FUNCTION {schema}.outbox_notify() RETURNS trigger AS $$
        BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END;
        $$ LANGUAGE plpgsql
        """,
        f"""
        CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox
        {when} EXECUTE FUNCTION {schema}.outbox_notify()
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


def _events_in(row: Mapping[str, Any]) -> int | None:
    """How many events a row carries when it may join a pack: an event (an id, no headers) is
    one, a pack its writer made (no headers but ``PACKED_HEADER``) its count; anything else none."""
    raw = row.get("headers")
    if raw is None:
        return None if row["message_id"] is None else 1
    headers = _headers(raw)
    if row["message_id"] is None and headers is not None and headers.keys() == {PACKED_HEADER}:
        return int(headers[PACKED_HEADER])
    return None


@dataclass
class Handed:
    """One writer's committed rows, given to its relay; ``failed`` once a publish of them failed:
    then none of its ids is deleted, and the claim publishes them after the lease."""

    rows: Sequence[Mapping[str, Any]]
    ids: list[int]
    failed: bool = False


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
        event_linger_s: float = 0.0,
    ) -> None:
        """``writers_wake``: every writer in this process calls ``wake`` after its commit, so a
        NOTIFY from this process's own connections is ignored (it would only claim nothing).

        ``event_linger_s``: how long the events of a hand-over (rows for the events exchange) may
        wait for those of later hand-overs, so that a type's events of many send batches travel as
        one pack: one publish, one queue entry and one consume instead of one per batch. Their
        consumers wait out grace windows or are idempotent projections; deliveries never wait.
        """
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
        # Rows under a lease are their writer's to publish (``hand_over``) until it ends.
        leased = "AND (leased_until IS NULL OR leased_until < now())" if "leased_until" in table.c else ""
        self._claim = f"""
            DELETE FROM {self.schema}.outbox WHERE id IN (
                SELECT id FROM {self.schema}.outbox WHERE exchange = ANY($1::text[]) {leased} ORDER BY id
                FOR UPDATE SKIP LOCKED LIMIT $2
            ) RETURNING *
        """  # noqa: S608 - schema is a code constant, never input
        self.event_linger_s = event_linger_s
        self._handed: list[Handed] = []
        self._waiting: list[Handed] = []  # deliveries published, events lingering
        self._waiting_since: float | None = None
        self._published_ids: list[int] = []  # handed-over rows published and not yet deleted
        self._deleter: asyncio.Task[None] | None = None
        self._claim_due = True  # the first pass catches up on whatever is there
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
            self.wake()

    def wake(self) -> None:
        """Call right after a commit that wrote outbox rows."""
        self._claim_due = True
        self._wakeup.set()

    def hand_over(self, rows: Sequence[Mapping[str, Any]], ids: list[int]) -> None:
        """Call right after a commit that wrote ``rows`` (as ``ids``, under a lease): they are
        published from memory (deliveries at once and in the order handed over, events after
        their linger) and then deleted."""
        if ids:
            self._handed.append(Handed(rows, ids))
            self._wakeup.set()

    def _lingers(self, row: Mapping[str, Any]) -> bool:
        return bool(row["exchange"] == self.broker.topology.events_exchange)

    async def run(self) -> None:
        listen_task = asyncio.create_task(self._listen_forever())
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll_interval_s
        try:
            while True:
                try:
                    await self.publish_handed()
                    if self._claim_due:
                        self._claim_due = False
                        # A short batch means the outbox was empty at the claim; anything committed
                        # since has woken us (in process or by NOTIFY): no extra empty claim needed.
                        while await self.drain_once() >= self.batch_size:
                            pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox_relay_error", error=f"{type(exc).__name__}: {exc}")
                if self._handed:
                    continue
                now = loop.time()
                if now >= next_poll:  # the safety net, also under a steady stream of lingering events
                    self._claim_due = True
                    next_poll = now + self.poll_interval_s
                    continue
                until = next_poll
                if self._waiting_since is not None:
                    until = min(until, self._waiting_since + self.event_linger_s)
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands
                # as the wakeup fires, and the relay then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(until):
                        await self._wakeup.wait()
                self._wakeup.clear()
        finally:
            listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listen_task
            if self._listener is not None and not self._listener.is_closed():
                await self._listener.close()

    async def publish_handed(self, *, force: bool = False) -> int:
        """Publish what was handed over: deliveries at once, events once they lingered
        (``force``: now, at shutdown); a hand-over's rows are deleted when all of them went out.

        If publishing fails the rows stay, leased, and a claim publishes them once the lease ends.
        """
        handed, self._handed = self._handed, []
        now = asyncio.get_running_loop().time()
        published = 0
        if handed:
            deliveries = [row for h in handed for row in h.rows if not self._lingers(row)]
            published += await self._publish_handed_rows(deliveries, handed)
            # Only now: a forced call meanwhile (shutdown) must not delete rows whose deliveries
            # are not confirmed yet; what it misses stays leased and goes out after the lease.
            if self._waiting_since is None:
                self._waiting_since = now
            self._waiting.extend(handed)
        since = self._waiting_since  # set while anything waits
        if since is None or not (force or now >= since + self.event_linger_s):
            return published
        waiting, self._waiting, self._waiting_since = self._waiting, [], None
        # By type (stable: each keeps its order), so a type's events of many hand-overs are one run.
        events = [row for h in waiting for row in h.rows if self._lingers(row)]
        events.sort(key=lambda row: str(row["routing_key"]))
        published += await self._publish_handed_rows(events, waiting)
        self._published_ids.extend(i for h in waiting if not h.failed for i in h.ids)
        if self._deleter is None and self._published_ids:
            self._deleter = asyncio.get_running_loop().create_task(self._delete_published())
        return published

    async def _publish_handed_rows(self, rows: list[Mapping[str, Any]], handed: list[Handed]) -> int:
        """Publish ``rows`` of ``handed``; on failure mark those hand-overs failed (never deleted)."""
        if not rows:
            return 0
        try:
            await self._publish_rows(rows)
        except Exception as exc:
            log.warning("outbox_handover_failed", rows=len(rows), error=f"{type(exc).__name__}: {exc}")
            for h in handed:
                h.failed = True
            return 0
        self.published += len(rows)
        return len(rows)

    async def _delete_published(self) -> None:
        """Delete the rows hand-overs published, off the publish path: hand-overs published while
        a delete runs are deleted together by the next one.

        The commit does not wait for its WAL flush: a delete lost in a crash only leaves rows whose
        events were confirmed, and they go out once more after their lease (consumers are
        idempotent by event id), so the flush would guard nothing.
        """
        try:
            while self._published_ids:
                ids, self._published_ids = self._published_ids, []
                try:
                    async with driver_connection(self.engine) as pg:
                        await _execute_block(pg, self._delete_sql(ids))
                except Exception as exc:  # the rows stay leased: the claim republishes them later
                    log.warning("outbox_delete_failed", rows=len(ids), error=f"{type(exc).__name__}: {exc}")
        finally:
            self._deleter = None

    def _delete_sql(self, ids: list[int]) -> str:
        # One round trip for the whole transaction; ids are integers from RETURNING, never input.
        listed = ",".join(str(int(i)) for i in ids)
        delete = f"DELETE FROM {self.schema}.outbox WHERE id = ANY('{{{listed}}}'::bigint[])"  # noqa: S608
        return f"BEGIN; SET LOCAL synchronous_commit TO off; {delete}; COMMIT"

    async def deleted(self) -> None:
        """Wait until what was published so far is deleted (shutdown, tests)."""
        while self._deleter is not None:
            await asyncio.shield(self._deleter)

    async def drain_once(self) -> int:
        """Claim, publish and delete one batch; returns how many rows left the outbox."""
        async with driver_transaction(self.engine) as pg:
            claimed = await pg.fetch(self._claim, self.exchanges, self.batch_size)
            if not claimed:
                return 0
            await self._publish_rows(sorted(claimed, key=lambda r: r["id"]))
        self.published += len(claimed)
        return len(claimed)

    async def _publish_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Publish rows in order, packing runs of events; confirms in flight together."""
        events = [_events_in(row) for row in rows]

        def pack_key(i: int) -> tuple[str, str, bool] | None:
            """Events and packs with the same exchange, key and durability pack together."""
            if events[i] is None:
                return None
            return (rows[i]["exchange"], rows[i]["routing_key"], rows[i]["persistent"])

        # Frames still reach the broker in row order.
        await asyncio.gather(
            *(
                self._publish([rows[i] for i in run], [events[i] for i in run])
                for run in runs(
                    range(len(rows)), pack_key, lambda i: len(rows[i]["body"]), lambda i: events[i] or 1
                )
            )
        )

    async def _publish(self, run: list[Mapping[str, Any]], events: list[int | None]) -> None:
        """One row as it is, or a run of events and packs as one pack (``shared.messaging.packing``)."""
        first = run[0]
        if len(run) == 1:
            body, message_id = bytes(first["body"]), first["message_id"]
            headers = _headers(first.get("headers"))
        else:
            # A pack's events go in without its brackets: a pack of packs is one flat array.
            members = [
                bytes(r["body"]) if n == 1 else bytes(r["body"])[1:-1]
                for r, n in zip(run, events, strict=True)
            ]
            body, message_id = pack(members), None
            headers = {PACKED_HEADER: sum(n or 0 for n in events)}
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


async def _execute_block(pg: asyncpg.Connection, sql: str) -> None:
    """Run a ``BEGIN; …; COMMIT`` string; on failure leave no open transaction on the pooled connection."""
    try:
        await pg.execute(sql)
    except Exception:
        if pg.is_in_transaction():
            with contextlib.suppress(Exception):
                await pg.execute("ROLLBACK")
        raise
