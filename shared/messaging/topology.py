"""The whole broker topology, declared in one place so every process agrees on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

DEAD_LETTER_REASON_HEADER = "x-failure-reason"


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue owned by one consuming service."""

    name: str
    bindings: tuple[str, ...]
    exchange: str = "events"


@dataclass(frozen=True)
class Topology:
    prefix: str = "chat"
    delivery_limit: int = 5
    rpc_ttl_ms: int = 30_000
    service_queues: tuple[QueueSpec, ...] = field(default=())

    def name(self, short: str) -> str:
        return f"{self.prefix}.{short}"

    @property
    def events_exchange(self) -> str:
        return self.name("events")

    @property
    def delivery_exchange(self) -> str:
        return self.name("delivery")

    @property
    def dead_letter_exchange(self) -> str:
        return self.name("dlx")

    @property
    def dead_letter_queue(self) -> str:
        return self.name("dead")

    def rpc_queue(self, service: str) -> str:
        return self.name(f"{service}.rpc")

    def service_queue(self, service: str) -> str:
        return self.name(f"{service}.events")


# Which events each consuming service listens to; the catalogue lives in shared.events.
SERVICE_BINDINGS: dict[str, tuple[str, ...]] = {
    "store": ("user.registered", "user.updated", "presence.changed"),
    "notifier": (
        "user.registered",
        "user.updated",
        "otp.requested",
        "email.verification_requested",
        "password.reset_requested",
        "message.unread",
        "message.read",
        "message.updated",
        "presence.changed",
    ),
}


async def declare_exchanges(channel: AbstractChannel, topo: Topology) -> dict[str, AbstractExchange]:
    events = await channel.declare_exchange(topo.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    delivery = await channel.declare_exchange(
        topo.delivery_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        topo.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        topo.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="")
    return {"events": events, "delivery": delivery, "dlx": dlx}


async def declare_service_queue(
    channel: AbstractChannel, topo: Topology, service: str, bindings: tuple[str, ...] | None = None
) -> AbstractQueue:
    """A durable quorum queue with a delivery limit and a dead-letter exchange."""
    exchanges = await declare_exchanges(channel, topo)
    queue = await channel.declare_queue(
        topo.service_queue(service),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": topo.delivery_limit,
            "x-dead-letter-exchange": topo.dead_letter_exchange,
        },
    )
    for key in bindings if bindings is not None else SERVICE_BINDINGS.get(service, ()):
        await queue.bind(exchanges["events"], routing_key=key)
    return queue


async def declare_rpc_queue(channel: AbstractChannel, topo: Topology, service: str) -> AbstractQueue:
    """Competing-consumer command queue; stale requests expire, callers retry idempotently."""
    await declare_exchanges(channel, topo)
    return await channel.declare_queue(
        topo.rpc_queue(service),
        durable=True,
        arguments={
            "x-message-ttl": topo.rpc_ttl_ms,
            "x-dead-letter-exchange": topo.dead_letter_exchange,
        },
    )


async def declare_all(channel: AbstractChannel, topo: Topology) -> None:
    """Declare every shared exchange and queue; services call this at start so order never matters."""
    await declare_exchanges(channel, topo)
    for service in SERVICE_BINDINGS:
        await declare_service_queue(channel, topo, service)
    await declare_rpc_queue(channel, topo, "store")
