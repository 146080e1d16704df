"""One broker per process: a publishing and a consuming robust connection.

They are separate because a RabbitMQ memory or disk alarm blocks publishing
connections only; consumers on their own connection can still drain queues.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from shared.messaging.publisher import Publisher
from shared.messaging.topology import Topology, declare_all


def _with_heartbeat(url: str, heartbeat_s: int) -> URL:
    parsed = URL(url)
    if "heartbeat" not in parsed.query:
        parsed = parsed.update_query(heartbeat=str(heartbeat_s))
    return parsed


class Broker:
    """Owns the process's two connections, its confirm channel and the topology."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        service: str,
        heartbeat_s: int = 10,
        prefetch: int = 64,
    ) -> None:
        self.url = _with_heartbeat(url, heartbeat_s)
        self.topology = topology
        self.service = service
        self.prefetch = prefetch
        self._publish_conn: AbstractRobustConnection | None = None
        self._consume_conn: AbstractRobustConnection | None = None
        self._publisher: Publisher | None = None

    async def start(self) -> None:
        self._publish_conn = await aio_pika.connect_robust(
            self.url,
            client_properties={"connection_name": f"{self.service}-publish"},
            reconnect_interval=1,
        )
        self._consume_conn = await aio_pika.connect_robust(
            self.url,
            client_properties={"connection_name": f"{self.service}-consume"},
            reconnect_interval=1,
        )
        channel = await self._publish_conn.channel(publisher_confirms=True)
        await declare_all(channel, self.topology)
        self._publisher = Publisher(channel, self.topology)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("broker not started")
        return self._publisher

    async def consumer_channel(self, prefetch: int | None = None) -> AbstractRobustChannel:
        """A fresh channel on the consuming connection with bounded prefetch."""
        if self._consume_conn is None:
            raise RuntimeError("broker not started")
        channel = await self._consume_conn.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        return channel

    async def publish_channel(self, *, confirms: bool = True) -> AbstractRobustChannel:
        """A fresh channel on the publishing connection (RPC clients and servers own one each)."""
        if self._publish_conn is None:
            raise RuntimeError("broker not started")
        return await self._publish_conn.channel(publisher_confirms=confirms)

    def is_ready(self) -> bool:
        return all(
            conn is not None and not conn.is_closed and conn.connected.is_set()
            for conn in (self._publish_conn, self._consume_conn)
        )

    async def close(self) -> None:
        for conn in (self._consume_conn, self._publish_conn):
            if conn is not None and not conn.is_closed:
                await conn.close()
