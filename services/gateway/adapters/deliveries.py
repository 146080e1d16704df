"""This instance's delivery queue: bound to ``user.<id>`` for every user connected here.

The queue is exclusive and transient: frames for a user not connected here
never reach it, and frames lost with an instance are recovered by the
client's resume. It is consumed without acks; order is the broker's order.

Bindings are sent with ``nowait`` and confirmed together by one synchronous
call on the same channel (AMQP handles a channel's methods in order): a
burst of connects costs one round trip, not one per user. After a broker
reconnect every current user is bound again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from shared.commands import DELIVERY_TO_HEADER, user_key
from shared.messaging.connection import Broker

OnDelivery = Callable[[AbstractIncomingMessage], None]


class DeliveryQueue:
    def __init__(
        self,
        broker: Broker,
        instance_id: str,
        on_delivery: OnDelivery,
        *,
        current_users: Callable[[], list[str]] = list,
        on_rebound: Callable[[], None] = lambda: None,
        prefetch: int = 1000,
    ) -> None:
        self.broker = broker
        self.name = broker.topology.name(f"gateway.{instance_id}")
        self.on_delivery = on_delivery
        self.current_users = current_users
        self.on_rebound = on_rebound  # frames published while the queue was gone are lost: resync
        self.prefetch = prefetch
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._barrier: asyncio.Future[None] | None = None
        self._barrier_running = False
        self._barrier_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._channel = await self.broker.consumer_channel(prefetch=self.prefetch)
        self._queue = await self._channel.declare_queue(
            self.name, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        await self._queue.consume(self._on_message, no_ack=True)
        self._channel.reopen_callbacks.add(self._rebind_all)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Synchronous from here on: callbacks start in delivery order, so frames keep it.
        self.on_delivery(message)

    async def bind(self, user_id: str) -> None:
        """Bind ``user.<id>``; returns once the broker has applied it."""
        await self._send_binding(user_id, bind=True)
        await self._confirmed()

    async def unbind(self, user_id: str) -> None:
        if self._channel is None or self._channel.is_closed:
            return
        await self._send_binding(user_id, bind=False)

    async def _send_binding(self, user_id: str, *, bind: bool) -> None:
        assert self._channel is not None
        channel = await self._channel.get_underlay_channel()
        exchange = self.broker.topology.delivery_exchange
        if bind:
            await channel.queue_bind(self.name, exchange, routing_key=user_key(user_id), nowait=True)
        else:
            await channel.queue_unbind(self.name, exchange, routing_key=user_key(user_id))

    async def _confirmed(self) -> None:
        """Wait for a synchronous round trip issued after this caller's nowait bind (shared by a burst)."""
        future = self._barrier
        if future is None:
            future = self._barrier = asyncio.get_running_loop().create_future()
            if not self._barrier_running:
                self._barrier_running = True
                self._barrier_task = asyncio.get_running_loop().create_task(self._run_barriers())
        await asyncio.shield(future)

    async def _run_barriers(self) -> None:
        try:
            while self._barrier is not None:
                future, self._barrier = self._barrier, None
                try:
                    assert self._channel is not None
                    channel = await self._channel.get_underlay_channel()
                    await channel.queue_declare(self.name, passive=True)
                    future.set_result(None)
                except Exception as exc:
                    future.set_exception(exc)
        finally:
            self._barrier_running = False

    async def _rebind_all(self, *_: Any) -> None:
        for user in self.current_users():
            await self._send_binding(user, bind=True)
        await self._confirmed()
        self.on_rebound()

    async def stop(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


def recipients(message: AbstractIncomingMessage) -> list[str]:
    raw = (message.headers or {}).get(DELIVERY_TO_HEADER)
    if isinstance(raw, list | tuple):
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]
    return []
