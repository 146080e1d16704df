"""Kernel fixtures: a broker on the run's vhost and an outbox table in a scratch schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from shared.outbox import outbox_table, outbox_trigger_sql


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    broker = Broker(
        amqp_url, Topology(prefix=f"k{uuid.uuid4().hex[:8]}", delivery_limit=3), service="kernel-test"
    )
    await broker.start()
    yield broker
    await broker.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


async def scratch_outbox(engine: AsyncEngine, *, store_columns: bool) -> AsyncIterator[Table]:
    """An outbox table in its own schema, dropped afterwards; ``store_columns``: with the
    store's ``headers`` and ``leased_until``."""
    schema = f"kt_{uuid.uuid4().hex[:8]}"
    table = outbox_table(MetaData(schema=schema))
    if store_columns:
        table.append_column(Column("headers", JSONB, nullable=True))
        table.append_column(Column("leased_until", DateTime(timezone=True), nullable=True))
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        await conn.run_sync(table.metadata.create_all)
        for statement in outbox_trigger_sql(schema, leased=store_columns):
            await conn.execute(text(statement))
    yield table
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
async def outbox(engine: AsyncEngine) -> AsyncIterator[Table]:
    async for table in scratch_outbox(engine, store_columns=False):
        yield table


@pytest.fixture
async def outbox_with_headers(engine: AsyncEngine) -> AsyncIterator[Table]:
    async for table in scratch_outbox(engine, store_columns=True):
        yield table
