"""Idempotent consumers: record each handled event id in the consumer's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, MetaData, Table, func
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import session_driver


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def first_delivery(session: AsyncSession, table: Table, event_id: uuid.UUID) -> bool:
    """True the first time an event id is seen in this transaction's service; False for a replay."""
    result = await session.execute(
        insert(table).values(event_id=event_id).on_conflict_do_nothing().returning(table.c.event_id)
    )
    return result.first() is not None


async def first_deliveries(
    session: AsyncSession, table: Table, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """The ids among ``event_ids`` seen for the first time, recorded in one statement (a batch).

    On the session's asyncpg connection (``session_driver``): every consumed batch runs it, and
    SQLAlchemy's per-statement work cost more than the insert.
    """
    unique = list(dict.fromkeys(event_ids))
    if not unique:
        return set()
    pg = await session_driver(session)
    found = await pg.fetch(
        f"INSERT INTO {table.fullname} (event_id) SELECT unnest($1::uuid[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        unique,
    )
    return {row["event_id"] for row in found}
