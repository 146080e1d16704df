"""Idempotent consumers: record each handled event id in the consumer's own transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import Column, DateTime, MetaData, Table, func
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
