"""All connections of this gateway instance: delivery fan-out, bindings, presence, housekeeping.

A delivery is decoded once and the same frame object is queued on every
local connection of every recipient. Presence is tracked per user here and
written to PostgreSQL only when this instance's share changes (first or last
device, active <-> idle); a periodic sweep (not on the message path) turns
quiet connections idle, closes expired tokens, heartbeats this instance and
expires dead ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter, Gauge

from services.gateway.adapters.deliveries import DeliveryQueue, recipients
from services.gateway.adapters.presence_repo import PresenceRepository
from services.gateway.adapters.store_client import SendBatcher, StoreClient
from services.gateway.connection import CLOSE_TOKEN_EXPIRED, Connection, Item
from services.gateway.domain.presence import is_idle
from services.gateway.settings import GatewaySettings
from shared.commands import (
    DELIVERY_BUNDLE_HEADER,
    DELIVERY_CONVERSATION_HEADER,
    DELIVERY_SEQ_HEADER,
    decode_bundle,
    encode_frame,
    user_key,
)
from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.security import TokenVerifier

log = get_logger(__name__)
CONNECTIONS = Gauge("chat_gateway_connections", "Open WebSocket connections on this instance")
DELIVERIES = Counter("chat_gateway_deliveries_total", "Delivery messages received from the broker")


class Hub:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        broker: Broker,
        store: StoreClient,
        verifier: TokenVerifier,
        presence: PresenceRepository,
        instance_id: str,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.sends = SendBatcher(store, max_in_flight=settings.rpc_sends_in_flight)
        self.verifier = verifier
        self.presence = presence
        self.instance_id = instance_id
        self.deliveries = DeliveryQueue(
            broker,
            instance_id,
            self.deliver,
            current_users=lambda: list(self.users),
            on_rebound=self.resync_all,
        )
        self.users: dict[str, set[Connection]] = {}
        self._binding: dict[str, asyncio.Task[None]] = {}  # binds in progress only
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.delivered = 0

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        await self.presence.heartbeat()
        await self.deliveries.start()
        self.spawn(self._presence_writer())
        self.spawn(self._housekeeping())

    async def stop(self) -> None:
        for conns in list(self.users.values()):
            for conn in list(conns):
                conn.abort(1001, "server shutting down")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.deliveries.stop()
        with contextlib.suppress(Exception):
            await self.presence.leave()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task that is kept referenced and cancelled on stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- connections ------------------------------------------------------------

    async def attach(self, conn: Connection) -> None:
        """Register a connection; its user's key is bound before it gets anything."""
        user = conn.user
        conns = self.users.get(user)
        if conns is None:
            conns = self.users[user] = set()
            task = asyncio.get_running_loop().create_task(self.deliveries.bind(user))
            self._binding[user] = task
            task.add_done_callback(
                lambda t: self._binding.pop(user, None) if self._binding.get(user) is t else None
            )
        conns.add(conn)
        CONNECTIONS.inc()
        self.presence_changed(user)
        pending = self._binding.get(user)
        if pending is not None:
            await asyncio.shield(pending)

    async def detach(self, conn: Connection) -> None:
        conns = self.users.get(conn.user)
        if conns is None:
            return
        if conn in conns:
            conns.discard(conn)
            CONNECTIONS.dec()
        self.presence_changed(conn.user)
        if not conns:
            del self.users[conn.user]
            with contextlib.suppress(Exception):
                await self.deliveries.unbind(conn.user)

    def connection_count(self) -> int:
        return sum(len(conns) for conns in self.users.values())

    # --- delivery ---------------------------------------------------------------

    def deliver(self, message: AbstractIncomingMessage) -> None:
        """Fan one delivery out to local connections; decoded once, never re-encoded."""
        headers = message.headers or {}
        DELIVERIES.inc()
        if headers.get(DELIVERY_BUNDLE_HEADER):
            try:
                bundle = decode_bundle(message.body)
            except (ValueError, TypeError) as exc:
                log.warning("delivery_bundle_malformed", error=type(exc).__name__)
                return
            for delivery in bundle:
                self._fan_out(delivery.to, Item(delivery.frame, delivery.conversation, delivery.seq))
            return
        conv = headers.get(DELIVERY_CONVERSATION_HEADER)
        seq = headers.get(DELIVERY_SEQ_HEADER)
        item = Item(
            message.body.decode(),
            conv.decode() if isinstance(conv, bytes) else conv if isinstance(conv, str) else None,
            seq if isinstance(seq, int) else None,
        )
        self._fan_out(recipients(message), item)

    def _fan_out(self, to: list[str], item: Item) -> None:
        self.delivered += 1
        for user in to:
            for conn in self.users.get(user, ()):
                conn.push(item)

    def resync_all(self) -> None:
        """After a broker reconnect: deliveries published while this instance's queue was gone are
        lost, so every connection asks the store for what follows its cursors (duplicates drop by seq)."""
        for conns in list(self.users.values()):
            for conn in list(conns):
                conn.resync()

    async def publish_typing(self, conversation_id: str, sender: str, to: list[str]) -> None:
        """Ephemeral: never stored, not persistent, expires in the broker after the typing TTL."""
        ttl_ms = self.settings.typing_ttl_ms
        frame = encode_frame(
            "typing", {"conversation_id": conversation_id, "user_id": sender, "expires_in_ms": ttl_ms}
        )
        headers: dict[str, Any] = {"to": to}
        if len(to) > 1:
            headers["CC"] = [user_key(u) for u in to[1:]]
        await self.broker.publisher.publish(
            self.broker.topology.delivery_exchange,
            user_key(to[0]),
            frame,
            headers=headers,
            persistent=False,
            expiration=ttl_ms / 1000,
        )

    # --- presence ---------------------------------------------------------------

    def presence_changed(self, user: str) -> None:
        """Mark a user's local share dirty; one writer task coalesces and persists it."""
        self._dirty.add(user)
        self._dirty_event.set()

    def local_share(self, user: str) -> tuple[int, bool]:
        conns = self.users.get(user, set())
        return len(conns), any(c.active for c in conns)

    async def _presence_writer(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            while self._dirty:
                users = [self._dirty.pop() for _ in range(min(len(self._dirty), 500))]
                shares = [(uuid.UUID(user), *self.local_share(user)) for user in users]
                try:
                    await self.presence.write_shares(shares)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("presence_write_failed", error=type(exc).__name__)
                    self._dirty.update(users)
                    await asyncio.sleep(1.0)

    async def _housekeeping(self) -> None:
        last_heartbeat = 0.0
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            now = time.monotonic()
            wall = time.time()
            for conns in list(self.users.values()):
                for conn in list(conns):
                    if conn.principal.expires_at <= wall:
                        conn.abort(CLOSE_TOKEN_EXPIRED, "token expired")
                    elif conn.active and is_idle(conn.last_activity, now, self.settings.idle_after_s):
                        conn.active = False
                        self.presence_changed(conn.user)
            if now - last_heartbeat >= self.settings.heartbeat_s:
                last_heartbeat = now
                try:
                    if await self.presence.heartbeat():
                        # We were swept as dead while alive: our shares are gone, write them again.
                        for user in list(self.users):
                            self.presence_changed(user)
                    await self.presence.sweep_dead_instances()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("presence_heartbeat_failed", error=type(exc).__name__)
