"""Idempotent consumers: record each handled event id in the consumer's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, MetaData, Table, func, text
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession


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
    """The ids among ``event_ids`` seen for the first time, recorded in one statement (a batch)."""
    unique = list(dict.fromkeys(event_ids))
    if not unique:
        return set()
    # One fixed statement over an array (compiled once), not a multi-row VALUES that SQLAlchemy
    # compiles again for every batch size.
    result = await session.execute(
        text(
            f"INSERT INTO {table.fullname} (event_id) SELECT unnest(CAST(:ids AS uuid[]))"
            " ON CONFLICT DO NOTHING RETURNING event_id"
        ),
        {"ids": unique},
    )
    return set(result.scalars().all())
