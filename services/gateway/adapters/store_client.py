"""Calls to the store over RabbitMQ RPC, typed by ``shared.commands``.

Sends from many connections are batched the way the store batches commits:
a lone send goes out at once as ``message.send``; sends that arrive while
``max_in_flight`` calls are on the wire travel together as one
``message.send_many``, so under load one RPC round trip carries many messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Histogram
from pydantic import BaseModel

from shared.commands import METHODS
from shared.messaging.rpc import RpcClient, RpcError
from shared.security import Principal

SEND_BATCH = Histogram(
    "chat_gateway_send_batch_size",
    "Sends carried by one RPC call to the store",
    buckets=(1, 2, 4, 8, 16, 64, 256),
)


class StoreClient:
    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc

    async def call(
        self, method: str, request: BaseModel | dict[str, Any], principal: Principal
    ) -> dict[str, Any]:
        """Send one request as ``principal``; raises ``RpcError`` with the store's code."""
        assert method in METHODS, method
        params = (
            request.model_dump(mode="json", exclude_none=True) if isinstance(request, BaseModel) else request
        )
        result: dict[str, Any] = await self.rpc.call(method, params, actor=principal.actor())
        return result


class SendBatcher:
    def __init__(self, store: StoreClient, *, max_in_flight: int = 4, max_batch: int = 256) -> None:
        self.store = store
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._pending: list[tuple[Principal, dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        """``message.send`` for ``principal``: the store's result, or ``RpcError`` with its code."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((principal, params, future))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._call(batch)
        finally:
            self._in_flight -= 1

    async def _call(
        self, batch: list[tuple[Principal, dict[str, Any], asyncio.Future[dict[str, Any]]]]
    ) -> None:
        SEND_BATCH.observe(len(batch))
        try:
            if len(batch) == 1:
                principal, params, future = batch[0]
                future.set_result(await self.store.call("message.send", params, principal))
                return
            items = [{"actor": p.actor(), "request": params} for p, params, _ in batch]
            result = await self.store.rpc.call("message.send_many", {"items": items})
        except RpcError as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RpcError(exc.code, exc.message, status=exc.status, **exc.extra))
            return
        except Exception as exc:  # never leave a sender waiting on a future nobody will resolve
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RpcError("unavailable", type(exc).__name__, status=503))
            return
        for (_, _, future), outcome in zip(batch, result["outcomes"], strict=True):
            if outcome.get("error"):
                error = dict(outcome["error"])
                code, message = str(error.pop("code")), str(error.pop("message"))
                future.set_exception(RpcError(code, message, status=int(error.pop("status", 400)), **error))
            else:
                future.set_result(outcome["result"])
