"""Events the store consumes: users (who administers, display names) and presence (who is online)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.adapters.rows import Rows, write_outbox
from shared.commands import encode_frame
from shared.events import EventBase, PresenceChanged, UserRegistered, UserUpdated
from shared.messaging.connection import Broker
from shared.messaging.consumer import BatchConsumer

UPSERT_USER = text(
    """
    INSERT INTO store.users (user_id, role, username, display_name, updated_at)
    VALUES (:user_id, :role, :username, :display_name, :at)
    ON CONFLICT (user_id) DO UPDATE SET role = excluded.role, username = excluded.username,
        display_name = excluded.display_name, updated_at = excluded.updated_at
    WHERE store.users.updated_at <= excluded.updated_at
    """
)
UPSERT_PRESENCE = text(
    """
    INSERT INTO store.presence (user_id, state, last_seen, occurred_at)
    VALUES (:user_id, :state, :last_seen, :at)
    ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, last_seen = excluded.last_seen,
        occurred_at = excluded.occurred_at
    WHERE store.presence.occurred_at < excluded.occurred_at
    RETURNING user_id
    """
)
COUNTERPARTS = text(
    """
    SELECT DISTINCT CASE WHEN user_id = :me THEN admin_id ELSE user_id END AS other
    FROM store.conversations
    WHERE (user_id = :me OR admin_id = :me) AND admin_id IS NOT NULL AND status <> 'CLOSED'
    LIMIT :cap
    """
)
FIRST_DELIVERY = text(
    "INSERT INTO store.inbox (event_id) VALUES (:id) ON CONFLICT DO NOTHING RETURNING event_id"
)


async def apply_user(conn: AsyncConnection, event: UserRegistered | UserUpdated) -> None:
    user = event.payload
    await conn.execute(
        UPSERT_USER,
        {
            "user_id": user.user_id,
            "role": user.role,
            "username": user.username,
            "display_name": user.display_name,
            "at": event.occurred_at,
        },
    )


class StoreConsumer(BatchConsumer):
    service = "store"

    def __init__(
        self,
        broker: Broker,
        engine: AsyncEngine,
        rows: Rows,
        *,
        fanout_cap: int,
        on_commit: Callable[[], None],
    ) -> None:
        super().__init__(broker)
        self.engine = engine
        self.rows = rows
        self.fanout_cap = fanout_cap
        self.on_commit = on_commit

    async def handle_batch(self, events: Sequence[EventBase]) -> None:
        """Everything prefetched in one transaction (one commit), each event deduplicated by the inbox."""
        async with self.engine.begin() as conn:
            for event in events:
                if (await conn.execute(FIRST_DELIVERY, {"id": event.id})).first() is None:
                    continue  # a redelivery (or a repeat within the batch): already applied
                if isinstance(event, UserRegistered | UserUpdated):
                    await apply_user(conn, event)
                elif isinstance(event, PresenceChanged):
                    await self._presence(conn, event)
        self.on_commit()

    async def _presence(self, conn: AsyncConnection, event: PresenceChanged) -> None:
        """Record it (assignment prefers online admins) and show it to every counterpart."""
        p = event.payload
        changed = await conn.execute(
            UPSERT_PRESENCE,
            {"user_id": p.user_id, "state": p.state, "last_seen": p.last_seen, "at": event.occurred_at},
        )
        if changed.first() is None:
            return  # an older change arrived late
        others = [
            row.other for row in await conn.execute(COUNTERPARTS, {"me": p.user_id, "cap": self.fanout_cap})
        ]
        if others:
            frame = encode_frame("presence", p.model_dump(mode="json", exclude={"connections"}))
            await write_outbox(conn, [self.rows.delivery(frame, others)])
