"""RPC entry point: decode params with the contract's request model, call the use case, map errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from services.store.domain.rules import DomainError
from services.store.service import StoreService
from shared.commands import METHODS, Actor, Model
from shared.db import CONNECTION_ERRORS
from shared.messaging.rpc import Handler, RpcError

# Methods a gateway calls for many users at once: each item names its own actor.
BATCH_METHODS = frozenset({"message.send_many"})
DATABASE_DOWN: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, *CONNECTION_ERRORS)


def _wrap(name: str, use_case: Callable[[Any, Any], Awaitable[BaseModel]]) -> Handler:
    request_model = METHODS[name][0]

    async def handle(params: dict[str, Any], actor_raw: dict[str, Any]) -> Any:
        actor: Actor | None = None
        if name not in BATCH_METHODS:
            try:
                actor = Actor.model_validate(actor_raw)
            except ValidationError:
                raise RpcError("unauthorized", "no valid actor", status=401) from None
        try:
            request: Model = request_model.model_validate(params)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "params" for e in exc.errors())
            raise RpcError("invalid", f"invalid: {fields}", status=422) from None
        try:
            result = await use_case(actor, request)
        except DomainError as exc:
            raise RpcError(exc.code, exc.message, status=exc.status, **exc.extra) from None
        except DATABASE_DOWN as exc:
            raise RpcError("unavailable", "database unavailable, retry", status=503) from exc
        except DBAPIError as exc:
            if _is_connection_problem(exc):
                raise RpcError("unavailable", "database unavailable, retry", status=503) from exc
            raise
        return result.model_dump(mode="json")

    return handle


def _is_connection_problem(exc: DBAPIError) -> bool:
    """Connection refused or exhausted (e.g. 'too many clients'): the caller may retry."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(hint in text for hint in ("too many clients", "connection", "cannot connect", "shutting down"))


def handlers(service: StoreService) -> dict[str, Handler]:
    """Every method of ``shared.commands.METHODS``, bound to its use case."""
    table: dict[str, Callable[[Any, Any], Awaitable[BaseModel]]] = {
        "conversation.open": service.open_conversation,
        "conversation.list": service.list_conversations,
        "conversation.inbox": service.inbox,
        "conversation.get": service.get_conversation,
        "conversation.update": service.update_conversation,
        "message.send": service.send_message,
        "message.send_many": service.send_many,
        "message.edit": service.edit_message,
        "message.delete": service.delete_message,
        "message.history": service.history,
        "message.read": service.mark_read,
        "message.search": service.search,
        "sync": service.sync,
    }
    assert set(table) == set(METHODS), "every contract method needs a handler"
    return {name: _wrap(name, use_case) for name, use_case in table.items()}
