"""Calls to the store over RabbitMQ RPC, typed by ``shared.commands``.

Sends from many connections are batched the way the store batches commits:
a lone send goes out at once as ``message.send``; sends that arrive while
``max_in_flight`` calls are on the wire travel together as one
``message.send_many``, so under load one RPC round trip carries many messages.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram
from pydantic import BaseModel

from shared.batching import GroupCommit
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
    """``message.send`` calls grouped: one RPC for a lone send, ``message.send_many`` under load."""

    def __init__(self, store: StoreClient, *, max_in_flight: int = 4, max_batch: int = 256) -> None:
        self.store = store
        self._group: GroupCommit[tuple[Principal, dict[str, Any]], dict[str, Any]] = GroupCommit(
            self._flush, max_batch=max_batch, max_in_flight=max_in_flight
        )

    async def send(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        """``message.send`` for ``principal``: the store's result, or ``RpcError`` with its code."""
        return await self._group.submit((principal, params))

    async def _flush(
        self, batch: list[tuple[Principal, dict[str, Any]]]
    ) -> list[dict[str, Any] | BaseException]:
        SEND_BATCH.observe(len(batch))
        try:
            if len(batch) == 1:
                principal, params = batch[0]
                return [await self.store.call("message.send", params, principal)]
            items = [{"actor": p.actor(), "request": params} for p, params in batch]
            result = await self.store.rpc.call("message.send_many", {"items": items})
        except RpcError:
            raise
        except Exception as exc:  # a sender must always hear back, with a code it knows
            raise RpcError("unavailable", type(exc).__name__, status=503) from exc
        return [_outcome(outcome) for outcome in result["outcomes"]]


def _outcome(outcome: dict[str, Any]) -> dict[str, Any] | BaseException:
    if not outcome.get("error"):
        result: dict[str, Any] = outcome["result"]
        return result
    error = dict(outcome["error"])
    code, message = str(error.pop("code")), str(error.pop("message"))
    return RpcError(code, message, status=int(error.pop("status", 400)), **error)
