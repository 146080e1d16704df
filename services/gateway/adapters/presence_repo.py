"""Presence in PostgreSQL: each instance writes its share; the aggregate changes under a row lock.

A change of the aggregate writes a ``presence.changed`` outbox row in the same
transaction. Instances heartbeat; any live instance sweeps the shares of one
whose heartbeat is older than the time-to-live, so a killed gateway stops
counting without anyone's help.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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

    async def heartbeat(self) -> bool:
        """Returns True when this instance's row had to be created: at start, or after another
        instance swept it as dead (a stall or a database outage longer than the TTL) and deleted
        its shares, which the caller must then write again."""
        async with self.engine.begin() as conn:
            created = (
                await conn.execute(
                    text(
                        """
                        INSERT INTO gateway.instances (instance_id, heartbeat_at) VALUES (:id, now())
                        ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()
                        RETURNING (xmax = 0) AS created
                        """
                    ),
                    {"id": self.instance_id},
                )
            ).scalar_one()
        return bool(created)

    async def write_shares(self, shares: list[tuple[uuid.UUID, int, bool]]) -> int:
        """Record this instance's share of each user (users, connections, active) in one transaction.

        Returns how many users' aggregate state changed.
        """
        now = utcnow()
        keep = [
            {"iid": self.instance_id, "uid": uid, "n": n, "active": active, "now": now}
            for uid, n, active in shares
            if n > 0
        ]
        gone = [uid for uid, n, _ in shares if n <= 0]
        async with self.engine.begin() as conn:
            if keep:
                await conn.execute(
                    text(
                        """
                        INSERT INTO gateway.presence_shares
                            (instance_id, user_id, connections, active, last_seen)
                        VALUES (:iid, :uid, :n, :active, :now)
                        ON CONFLICT (user_id, instance_id) DO UPDATE
                        SET connections = excluded.connections, active = excluded.active,
                            last_seen = excluded.last_seen
                        """
                    ),
                    keep,
                )
            if gone:
                await conn.execute(
                    text(
                        "DELETE FROM gateway.presence_shares"
                        " WHERE instance_id = :iid AND user_id = ANY(:uids)"
                    ),
                    {"iid": self.instance_id, "uids": gone},
                )
            return await self._recompute(conn, [uid for uid, _, _ in shares], now)

    async def sweep_dead_instances(self) -> int:
        """Drop the shares of instances silent for longer than the TTL; returns how many users changed."""
        now = utcnow()
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
            changed = await self._recompute(conn, list(users), now)
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
            await self._recompute(conn, list(users), now)

    async def _recompute(self, conn: AsyncConnection, users: list[uuid.UUID], now: datetime) -> int:
        """Re-aggregate users under their presence-row locks; write each change and its event.

        Five statements for any number of users. The rows are locked first (in one
        order for every writer), so the shares read next include every share
        another instance committed before: two instances never overwrite each
        other's view.
        """
        if not users:
            return 0
        users = sorted(set(users))
        await conn.execute(
            text(
                """
                INSERT INTO gateway.presence (user_id, state, last_seen)
                SELECT uid, 'offline', :now FROM unnest(CAST(:uids AS uuid[])) AS uid
                ON CONFLICT (user_id) DO NOTHING
                """
            ),
            {"uids": users, "now": now},
        )
        current = {
            row.user_id: row.state
            for row in await conn.execute(
                text(
                    "SELECT user_id, state FROM gateway.presence WHERE user_id = ANY(:uids)"
                    " ORDER BY user_id FOR UPDATE"
                ),
                {"uids": users},
            )
        }
        shares: dict[uuid.UUID, list[InstanceShare]] = {uid: [] for uid in users}
        for row in await conn.execute(
            text(
                """
                SELECT s.user_id, s.connections, s.active, (i.heartbeat_at >= :cutoff) AS alive
                FROM gateway.presence_shares s
                LEFT JOIN gateway.instances i ON i.instance_id = s.instance_id
                WHERE s.user_id = ANY(:uids)
                """
            ),
            {"uids": users, "cutoff": now - self.ttl},
        ):
            shares[row.user_id].append(InstanceShare(row.connections, row.active, bool(row.alive)))
        changes: list[dict[str, Any]] = []
        for uid in users:
            state = aggregate(shares[uid])
            if state != current.get(uid):
                connections = sum(s.connections for s in shares[uid] if s.alive)
                changes.append({"uid": uid, "state": state, "ls": now, "n": connections})
        if not changes:
            return 0
        await conn.execute(
            text(
                "UPDATE gateway.presence SET state = :state, last_seen = :ls, connections = :n"
                " WHERE user_id = :uid"
            ),
            changes,
        )
        events = [
            PresenceChanged(
                payload=PresencePayload(
                    user_id=c["uid"], state=c["state"], last_seen=c["ls"], connections=c["n"]
                )
            )
            for c in changes
        ]
        await add_to_outbox(conn, outbox, [event_row(event, self.events_exchange) for event in events])
        return len(changes)
