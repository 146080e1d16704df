"""Calls to the store over RabbitMQ RPC, typed by ``shared.commands``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.commands import METHODS
from shared.messaging.rpc import RpcClient
from shared.security import Principal


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
