"""Confirmed, persistent publishing: a publish returns only after the broker took the message."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, DeliveryMode
from aiormq.abc import DeliveredMessage

from shared.events import EventBase
from shared.messaging.topology import Topology


class UnroutableError(RuntimeError):
    """The broker returned a mandatory message: no queue was bound for its routing key."""


class Publisher:
    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self.channel = channel
        self.topology = topology
        self._exchanges: dict[str, AbstractExchange] = {}

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self.channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = True,
        mandatory: bool = False,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: float | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raise if it nacks or returns it."""
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=expiration,
        )
        target = await self._exchange(exchange)
        result = await target.publish(message, routing_key=routing_key, mandatory=mandatory)
        if isinstance(result, DeliveredMessage):
            raise UnroutableError(f"unroutable: {exchange}/{routing_key}")

    async def publish_event(self, event: EventBase) -> None:
        """Publish outside any transaction: only for events no database change depends on."""
        await self.publish(
            self.topology.events_exchange,
            event.type,  # type: ignore[attr-defined]
            event.to_json(),
            message_id=str(event.id),
        )
