"""This instance's delivery queue: bound to ``user.<id>`` for every user connected here.

The queue is exclusive and transient: frames for a user not connected here
never reach it, and frames lost with an instance are recovered by the
client's resume. It is consumed without acks; order is the broker's order.
"""

from __future__ import annotations

from collections.abc import Callable

from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
)

from shared.commands import DELIVERY_TO_HEADER, user_key
from shared.messaging.connection import Broker

OnDelivery = Callable[[AbstractIncomingMessage], None]


class DeliveryQueue:
    def __init__(
        self, broker: Broker, instance_id: str, on_delivery: OnDelivery, *, prefetch: int = 1000
    ) -> None:
        self.broker = broker
        self.name = broker.topology.name(f"gateway.{instance_id}")
        self.on_delivery = on_delivery
        self.prefetch = prefetch
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        self._channel = await self.broker.consumer_channel(prefetch=self.prefetch)
        self._exchange = await self._channel.get_exchange(self.broker.topology.delivery_exchange)
        self._queue = await self._channel.declare_queue(
            self.name, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Synchronous from here on: callbacks start in delivery order, so frames keep it.
        self.on_delivery(message)

    async def bind(self, user_id: str) -> None:
        assert self._queue is not None and self._exchange is not None
        await self._queue.bind(self._exchange, routing_key=user_key(user_id))

    async def unbind(self, user_id: str) -> None:
        if self._queue is None or self._exchange is None or self._channel is None or self._channel.is_closed:
            return
        await self._queue.unbind(self._exchange, routing_key=user_key(user_id))

    async def stop(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


def recipients(message: AbstractIncomingMessage) -> list[str]:
    raw = (message.headers or {}).get(DELIVERY_TO_HEADER)
    if isinstance(raw, list | tuple):
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]
    return []
