"""Support RPC on the "notifier" queue: recent notifications and pending work, for administrators."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters import repository as repo
from shared.db import transaction
from shared.logging import mask_phone
from shared.messaging.rpc import Handler, RpcError

MAX_LIMIT = 200


def _mask_destination(channel: str | None, destination: str | None) -> str | None:
    if destination is None:
        return None
    if channel == "sms":
        return mask_phone(destination)
    local, _, domain = destination.partition("@")
    return f"{local[:2]}***@{domain}" if domain else "***"


def _jsonable(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in row.keys():
        value = row[key]
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[str(getattr(key, "key", key))] = value
    return out


def _parse_uuid(value: Any, name: str) -> uuid.UUID | None:
    if value in (None, ""):
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise RpcError("bad_request", f"{name} must be a UUID", status=422) from None


def make_handlers(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Handler]:
    async def recent(params: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        """``notifications.recent``: ``{limit?, recipient_id?, status?}`` -> notifications and pending."""
        if actor.get("role") != "ADMIN":
            raise RpcError("forbidden", "administrators only", status=403)
        try:
            limit = int(params.get("limit", 50))
        except (TypeError, ValueError):
            raise RpcError("bad_request", "limit must be an integer", status=422) from None
        limit = max(1, min(limit, MAX_LIMIT))
        recipient_id = _parse_uuid(params.get("recipient_id"), "recipient_id")
        status = params.get("status")
        if status is not None and not isinstance(status, str):
            raise RpcError("bad_request", "status must be a string", status=422)
        async with sessions() as session:
            rows = await repo.recent_notifications(
                session=session, limit=limit, recipient_id=recipient_id, status=status
            )
            pending = await repo.pending_threads(session=session, limit=limit, recipient_id=recipient_id)
        return {
            "notifications": [
                {**_jsonable(row), "destination": _mask_destination(row["channel"], row["destination"])}
                for row in rows
            ],
            "pending": [_jsonable(row) for row in pending],
        }

    async def silence(params: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        """``notifications.silence``: ``{conversation_id, silence_until_read}`` for the actor's own alerts."""
        user_id = _parse_uuid(actor.get("user_id"), "actor.user_id")
        if user_id is None:
            raise RpcError("unauthorized", "an authenticated user is required", status=401)
        conversation_id = _parse_uuid(params.get("conversation_id"), "conversation_id")
        enabled = params.get("silence_until_read")
        if conversation_id is None or not isinstance(enabled, bool):
            raise RpcError("bad_request", "conversation_id and silence_until_read are required", status=422)
        async with transaction(sessions) as session:
            await repo.set_silence_until_read(
                session=session, recipient_id=user_id, conversation_id=conversation_id, enabled=enabled
            )
        return {"conversation_id": str(conversation_id), "silence_until_read": enabled}

    return {"notifications.recent": recent, "notifications.silence": silence}
