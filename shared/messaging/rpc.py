"""Request/reply over RabbitMQ: competing servers on one queue, one reply queue per client.

A request is ``{"method", "params", "actor"}``; a reply is ``{"ok": true,
"result"}`` or ``{"ok": false, "error": {"code", "message"}}``. Handlers raise
``RpcError`` for errors the caller should see; anything else becomes
``internal``. Requests are idempotent by design, so a caller may retry after
``RpcTimeout``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aiormq.exceptions import AMQPError

from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.messaging.publisher import Publisher, UnroutableError
from shared.messaging.topology import declare_rpc_queue

log = get_logger(__name__)

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """An error meant for the caller, with a stable machine-readable code."""

    def __init__(self, code: str, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra  # JSON-ready details for the caller, e.g. ``retry_after_s``

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "code": self.code, "message": self.message, "status": self.status}


class RpcTimeout(RpcError):
    def __init__(self, method: str, timeout: float) -> None:
        super().__init__("unavailable", f"{method}: no reply within {timeout:.1f}s", status=503)


class RpcClient:
    """One long-lived exclusive reply queue per process, futures keyed by correlation id."""

    def __init__(self, broker: Broker, service: str, *, timeout: float = 5.0) -> None:
        self.broker = broker
        self.service = service
        self.timeout = timeout
        self.reply_queue_name = broker.topology.name(f"reply.{uuid.uuid4().hex}")
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._channel: AbstractRobustChannel | None = None
        self._publisher: Publisher | None = None

    async def start(self) -> None:
        self._channel = await self.broker.publish_channel()
        queue = await self._channel.declare_queue(self.reply_queue_name, exclusive=True, auto_delete=True)
        await queue.consume(self._on_reply, no_ack=True)
        self._publisher = Publisher(self._channel, self.broker.topology)

    async def stop(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        actor: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        assert self._publisher is not None, "rpc client not started"
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        wait = timeout or self.timeout
        try:
            await self._publisher.publish(
                "",
                self.broker.topology.rpc_queue(self.service),
                orjson.dumps({"method": method, "params": params, "actor": actor or {}}),
                persistent=False,
                mandatory=True,
                correlation_id=correlation_id,
                reply_to=self.reply_queue_name,
                expiration=wait,
            )
            reply = await asyncio.wait_for(future, wait)
        except TimeoutError:
            raise RpcTimeout(method, wait) from None
        except (AMQPError, ConnectionError, UnroutableError, RuntimeError) as exc:
            # The broker connection is down or recovering: same meaning to the caller as a timeout.
            raise RpcError(
                "unavailable", f"{method}: broker unavailable ({type(exc).__name__})", status=503
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
        if reply.get("ok"):
            return reply.get("result")
        error = dict(reply.get("error") or {})
        raise RpcError(
            str(error.pop("code", "internal")),
            str(error.pop("message", "error")),
            status=int(error.pop("status", 500)),
            **error,
        )

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return
        try:
            future.set_result(orjson.loads(message.body))
        except orjson.JSONDecodeError as exc:
            future.set_exception(RpcError("internal", f"bad reply: {exc}", status=502))


class RpcServer:
    """Serve one service's RPC queue; replicas compete for requests."""

    def __init__(self, broker: Broker, service: str, handlers: dict[str, Handler]) -> None:
        self.broker = broker
        self.service = service
        self.handlers = handlers
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._publisher: Publisher | None = None

    async def start(self) -> None:
        self._channel = await self.broker.consumer_channel()
        self._queue = await declare_rpc_queue(self._channel, self.broker.topology, self.service)
        # Replies go out on the publishing connection: an alarm then blocks replies, not intake.
        # Unconfirmed: a lost reply makes the caller time out and retry (requests are idempotent),
        # so a confirm would only hold the request's ack back by a broker round trip.
        channel = await self.broker.publish_channel(confirms=False)
        self._publisher = Publisher(channel, self.broker.topology)
        await self._queue.consume(self._on_request)

    async def stop(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        reply = encode_reply(await self.dispatch(message.body))
        if message.reply_to:
            assert self._publisher is not None
            await self._publisher.publish(
                "",
                message.reply_to,
                reply,
                persistent=False,
                correlation_id=message.correlation_id,
            )
        await message.ack()

    async def dispatch(self, body: bytes) -> dict[str, Any]:
        """Decode, route and run one request; always returns a reply, never raises."""
        try:
            request = orjson.loads(body)
            method = request["method"]
            params = request.get("params", {})
            actor = request.get("actor", {})
            if not isinstance(method, str):
                raise TypeError("method must be a string")
            if not isinstance(params, dict) or not isinstance(actor, dict):
                raise TypeError("params and actor must be objects")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return {"ok": False, "error": RpcError("bad_request", str(exc)).to_dict()}
        handler = self.handlers.get(method)
        if handler is None:
            return {
                "ok": False,
                "error": RpcError("unknown_method", f"unknown method {method!r}").to_dict(),
            }
        try:
            return {"ok": True, "result": await handler(params, actor)}
        except RpcError as exc:
            return {"ok": False, "error": exc.to_dict()}
        except Exception as exc:
            log.exception("rpc_handler_failed", method=method, error=type(exc).__name__)
            return {
                "ok": False,
                "error": RpcError("internal", "internal error", status=500).to_dict(),
            }


def encode_reply(reply: dict[str, Any]) -> bytes:
    """Encode a reply; a result JSON cannot hold becomes an ``internal`` error, never a lost request."""
    try:
        return orjson.dumps(reply)
    except TypeError as exc:
        log.error("rpc_reply_unencodable", error=str(exc))
        return orjson.dumps(
            {"ok": False, "error": RpcError("internal", "internal error", status=500).to_dict()}
        )
