"""REST for the notifier's support view and per-conversation silencing, over RPC to the notifier."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from services.gateway.entrypoints.http import CurrentPrincipal, _params
from shared.messaging.rpc import RpcClient, RpcError
from shared.problems import Problem, problem_responses

router = APIRouter(prefix="/api", tags=["notifications"], responses=problem_responses(401, 403, 422, 503))


class SilenceBody(BaseModel):
    silence_until_read: bool


async def _call(request: Request, method: str, params: dict[str, Any], principal: Any) -> dict[str, Any]:
    rpc: RpcClient = request.app.state.gateway.notifier_rpc
    try:
        result: dict[str, Any] = await rpc.call(method, params, actor=principal.actor())
    except RpcError as exc:
        raise Problem(exc.status, exc.message, code=exc.code, **exc.extra) from None
    return result


@router.get("/admin/notifications")
async def recent_notifications(
    request: Request,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    recipient_id: uuid.UUID | None = None,
    status: Literal["queued", "sending", "sent", "failed", "expired", "suppressed"] | None = None,
) -> dict[str, Any]:
    """Recent notifications with their status and, when suppressed or failed, why (admins only)."""
    if not principal.is_admin:
        raise Problem(403, "Forbidden", code="forbidden", detail="administrators only")
    return await _call(
        request,
        "notifications.recent",
        _params(limit=limit, recipient_id=recipient_id, status=status),
        principal,
    )


@router.put("/conversations/{conversation_id}/silence")
async def silence_conversation(
    request: Request, conversation_id: uuid.UUID, body: SilenceBody, principal: CurrentPrincipal
) -> dict[str, Any]:
    """'Silence until read': no email or SMS for this conversation until the caller reads it."""
    return await _call(
        request,
        "notifications.silence",
        {"conversation_id": str(conversation_id), "silence_until_read": body.silence_until_read},
        principal,
    )
