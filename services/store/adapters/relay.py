"""The store's outbox relay: the shared relay, plus AMQP headers (CC fan-out) per row."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import text

from shared.outbox import OutboxRelay


class HeaderOutboxRelay(OutboxRelay):
    """Claims rows with ``FOR UPDATE SKIP LOCKED`` like the shared relay and publishes their headers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claim = text(
            f"""
            DELETE FROM {self.schema}.outbox WHERE id IN (
                SELECT id FROM {self.schema}.outbox ORDER BY id
                FOR UPDATE SKIP LOCKED LIMIT :limit
            ) RETURNING id, exchange, routing_key, body, message_id, persistent, headers
            """  # noqa: S608 - schema is a code constant, never input
        )

    async def drain_once(self) -> int:
        async with self.engine.connect() as conn, conn.begin():
            rows = list((await conn.execute(self._claim, {"limit": self.batch_size})).all())
            if not rows:
                return 0
            rows.sort(key=lambda r: r.id)
            # Confirms in flight together; frames still reach the broker in id order.
            await asyncio.gather(
                *(
                    self.publisher.publish(
                        row.exchange,
                        row.routing_key,
                        bytes(row.body),
                        message_id=row.message_id,
                        persistent=row.persistent,
                        headers=_headers(row.headers),
                    )
                    for row in rows
                )
            )
        self.published += len(rows)
        return len(rows)


def _headers(raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str | bytes):
        decoded: dict[str, Any] = orjson.loads(raw)
        return decoded
    assert isinstance(raw, dict)
    return raw
