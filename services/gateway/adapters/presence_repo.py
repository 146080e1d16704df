"""Presence in PostgreSQL: each instance writes its share; the aggregate changes under a row lock.

A change of the aggregate writes a ``presence.changed`` outbox row in the same
transaction. Instances heartbeat; any live instance sweeps the shares of one
whose heartbeat is older than the time-to-live, so a killed gateway stops
counting without anyone's help.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.gateway.adapters.tables import outbox
from services.gateway.domain.presence import InstanceShare, aggregate
from shared.events import PresenceChanged, PresencePayload
from shared.outbox import add_to_outbox, event_row


def utcnow() -> datetime:
    return datetime.now(UTC)


class PresenceRepository:
    def __init__(self, engine: AsyncEngine, *, instance_id: str, ttl_s: float, events_exchange: str) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.ttl = timedelta(seconds=ttl_s)
        self.events_exchange = events_exchange

    async def heartbeat(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO gateway.instances (instance_id, heartbeat_at) VALUES (:id, now())
                    ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()
                    """
                ),
                {"id": self.instance_id},
            )

    async def write_share(self, user_id: uuid.UUID, connections: int, active: bool) -> bool:
        """Record this instance's share of a user; True when the aggregate changed."""
        now = utcnow()
        async with self.engine.begin() as conn:
            if connections > 0:
                await conn.execute(
                    text(
                        """
                        INSERT INTO gateway.presence_shares
                            (instance_id, user_id, connections, active, last_seen)
                        VALUES (:iid, :uid, :n, :active, :now)
                        ON CONFLICT (user_id, instance_id) DO UPDATE
                        SET connections = :n, active = :active, last_seen = :now
                        """
                    ),
                    {"iid": self.instance_id, "uid": user_id, "n": connections, "active": active, "now": now},
                )
            else:
                await conn.execute(
                    text("DELETE FROM gateway.presence_shares WHERE instance_id = :iid AND user_id = :uid"),
                    {"iid": self.instance_id, "uid": user_id},
                )
            return await self._recompute(conn, user_id, now)

    async def sweep_dead_instances(self) -> int:
        """Drop the shares of instances silent for longer than the TTL; returns how many users changed."""
        now = utcnow()
        changed = 0
        async with self.engine.begin() as conn:
            dead = [
                row.instance_id
                for row in await conn.execute(
                    text(
                        """
                        SELECT instance_id FROM gateway.instances WHERE heartbeat_at < :cutoff
                        FOR UPDATE SKIP LOCKED
                        """
                    ),
                    {"cutoff": now - self.ttl},
                )
            ]
            if not dead:
                return 0
            users = {
                row.user_id
                for row in await conn.execute(
                    text(
                        "DELETE FROM gateway.presence_shares WHERE instance_id = ANY(:ids) RETURNING user_id"
                    ),
                    {"ids": dead},
                )
            }
            await conn.execute(
                text("DELETE FROM gateway.instances WHERE instance_id = ANY(:ids)"), {"ids": dead}
            )
            for user_id in sorted(users):
                changed += await self._recompute(conn, user_id, now)
        return changed

    async def leave(self) -> None:
        """Graceful shutdown: this instance's users stop counting now, not after the TTL."""
        now = utcnow()
        async with self.engine.begin() as conn:
            users = {
                row.user_id
                for row in await conn.execute(
                    text("DELETE FROM gateway.presence_shares WHERE instance_id = :iid RETURNING user_id"),
                    {"iid": self.instance_id},
                )
            }
            await conn.execute(
                text("DELETE FROM gateway.instances WHERE instance_id = :iid"), {"iid": self.instance_id}
            )
            for user_id in sorted(users):
                await self._recompute(conn, user_id, now)

    async def _recompute(self, conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> bool:
        await conn.execute(
            text(
                """
                INSERT INTO gateway.presence (user_id, state, last_seen) VALUES (:uid, 'offline', :now)
                ON CONFLICT (user_id) DO NOTHING
                """
            ),
            {"uid": user_id, "now": now},
        )
        current = (
            await conn.execute(
                text("SELECT state, last_seen FROM gateway.presence WHERE user_id = :uid FOR UPDATE"),
                {"uid": user_id},
            )
        ).one()
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT s.connections, s.active, s.last_seen, (i.heartbeat_at >= :cutoff) AS alive
                    FROM gateway.presence_shares s
                    LEFT JOIN gateway.instances i ON i.instance_id = s.instance_id
                    WHERE s.user_id = :uid
                    """
                ),
                {"uid": user_id, "cutoff": now - self.ttl},
            )
        ).all()
        shares = [InstanceShare(r.connections, r.active, bool(r.alive)) for r in rows]
        state = aggregate(shares)
        connections = sum(s.connections for s in shares if s.alive)
        if state == current.state:
            return False
        last_seen = now  # the moment the user was last seen in any state but this new one
        await conn.execute(
            text(
                "UPDATE gateway.presence SET state = :state, last_seen = :ls, connections = :n"
                " WHERE user_id = :uid"
            ),
            {"state": state, "ls": last_seen, "n": connections, "uid": user_id},
        )
        event = PresenceChanged(
            payload=PresencePayload(
                user_id=user_id, state=state, last_seen=last_seen, connections=connections
            )
        )
        await add_to_outbox(conn, outbox, [event_row(event, self.events_exchange)])
        return True
