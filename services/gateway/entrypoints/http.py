"""REST under ``/api``: everything the WebSocket does, for clients without a socket.

Each route takes the principal from a verified token (``Authorization:
Bearer`` or the auth cookie), calls the store over RPC and maps its error
codes to problem JSON. A foreign or unknown id is 404, never 403.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from services.gateway.adapters.store_client import StoreClient
from services.gateway.domain.tokens import token_from_request
from shared.commands import (
    ConversationList,
    ConversationView,
    HistoryPage,
    MessageResult,
    OpenConversation,
    OpenConversationResult,
    ReadResult,
    SearchResult,
    SendResult,
)
from shared.events import ConversationStatus
from shared.messaging.rpc import RpcError
from shared.problems import Problem, problem_responses
from shared.security import InvalidToken, KeysUnavailable, Principal

router = APIRouter(prefix="/api", tags=["chat"], responses=problem_responses(401, 404, 422, 429, 503))


async def current_principal(request: Request) -> Principal:
    hub = request.app.state.hub
    token = token_from_request(request.headers, request.cookies, hub.settings.access_cookie)
    if token is None:
        raise Problem(401, "Unauthorized", code="unauthorized", detail="missing access token")
    try:
        principal: Principal = await hub.verifier.verify(token)
    except KeysUnavailable:
        raise Problem(
            503, "Service Unavailable", code="unavailable", detail="cannot verify tokens right now"
        ) from None
    except InvalidToken:
        raise Problem(401, "Unauthorized", code="unauthorized", detail="invalid access token") from None
    return principal


def store_client(request: Request) -> StoreClient:
    client: StoreClient = request.app.state.hub.store
    return client


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
Store = Annotated[StoreClient, Depends(store_client)]


async def call(
    store: StoreClient, method: str, params: dict[str, Any], principal: Principal
) -> dict[str, Any]:
    try:
        return await store.call(method, params, principal)
    except RpcError as exc:
        headers = None
        if "retry_after_s" in exc.extra:
            headers = {"Retry-After": str(exc.extra["retry_after_s"])}
        raise Problem(exc.status, exc.message, code=exc.code, headers=headers, **exc.extra) from None


def _params(**values: Any) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, uuid.UUID | datetime) else v) for k, v in values.items() if v is not None
    }


class SendBody(BaseModel):
    client_id: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1)


class EditBody(BaseModel):
    body: str = Field(min_length=1)


class ReadBody(BaseModel):
    seq: int = Field(ge=0)


class UpdateBody(BaseModel):
    status: ConversationStatus | None = None
    admin_id: uuid.UUID | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=200)


@router.post("/conversations", status_code=201, response_model=OpenConversationResult)
async def open_conversation(
    body: OpenConversation, principal: CurrentPrincipal, store: Store, response: Response
) -> dict[str, Any]:
    """Open a consultation (optionally with its first message); assigned to the least-loaded admin."""
    result = await call(
        store, "conversation.open", body.model_dump(mode="json", exclude_none=True), principal
    )
    if result.get("duplicate"):
        response.status_code = 200
    return result


@router.get("/conversations", response_model=ConversationList)
async def my_conversations(
    principal: CurrentPrincipal,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: datetime | None = None,
) -> dict[str, Any]:
    """My conversations by last activity, with unread counts and the last message."""
    return await call(store, "conversation.list", _params(limit=limit, before=before), principal)


@router.get("/admin/conversations", response_model=ConversationList)
async def admin_inbox(
    principal: CurrentPrincipal,
    store: Store,
    status: ConversationStatus | None = None,
    assignee: Literal["me", "unassigned", "any"] | uuid.UUID = "me",
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: datetime | None = None,
) -> dict[str, Any]:
    """The administrators' inbox, filtered by status and assignee."""
    params = _params(status=status, assignee=assignee, limit=limit, before=before)
    return await call(store, "conversation.inbox", params, principal)


@router.get("/conversations/{conversation_id}", response_model=ConversationView)
async def get_conversation(
    conversation_id: uuid.UUID, principal: CurrentPrincipal, store: Store
) -> dict[str, Any]:
    return await call(store, "conversation.get", _params(conversation_id=conversation_id), principal)


@router.patch("/conversations/{conversation_id}", response_model=ConversationView)
async def update_conversation(
    conversation_id: uuid.UUID, body: UpdateBody, principal: CurrentPrincipal, store: Store
) -> dict[str, Any]:
    """Change status, reassign (administrators) or rename."""
    params = _params(conversation_id=conversation_id, **body.model_dump(exclude_none=True))
    return await call(store, "conversation.update", params, principal)


@router.get("/conversations/{conversation_id}/messages", response_model=HistoryPage)
async def history(
    conversation_id: uuid.UUID,
    principal: CurrentPrincipal,
    store: Store,
    before: Annotated[int | None, Query(ge=1)] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """History by seq cursor: the latest page, ``before`` a seq, or ``after`` a seq (ascending)."""
    params = _params(conversation_id=conversation_id, before=before, after=after, limit=limit)
    return await call(store, "message.history", params, principal)


@router.post("/conversations/{conversation_id}/messages", status_code=201, response_model=SendResult)
async def send_message(
    conversation_id: uuid.UUID, body: SendBody, principal: CurrentPrincipal, store: Store, response: Response
) -> dict[str, Any]:
    """Send; a retried ``client_id`` answers 200 with the original message."""
    params = _params(conversation_id=conversation_id, client_id=body.client_id, body=body.body)
    result = await call(store, "message.send", params, principal)
    if result.get("duplicate"):
        response.status_code = 200
    return result


@router.post("/conversations/{conversation_id}/read", response_model=ReadResult)
async def mark_read(
    conversation_id: uuid.UUID, body: ReadBody, principal: CurrentPrincipal, store: Store
) -> dict[str, Any]:
    return await call(
        store, "message.read", _params(conversation_id=conversation_id, seq=body.seq), principal
    )


@router.patch("/messages/{message_id}", response_model=MessageResult)
async def edit_message(
    message_id: uuid.UUID, body: EditBody, principal: CurrentPrincipal, store: Store
) -> dict[str, Any]:
    return await call(store, "message.edit", _params(message_id=message_id, body=body.body), principal)


@router.delete("/messages/{message_id}", response_model=MessageResult)
async def delete_message(message_id: uuid.UUID, principal: CurrentPrincipal, store: Store) -> dict[str, Any]:
    return await call(store, "message.delete", _params(message_id=message_id), principal)


@router.get("/search", response_model=SearchResult)
async def search(
    principal: CurrentPrincipal,
    store: Store,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    conversation_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Full-text search over the messages of my conversations."""
    return await call(
        store, "message.search", _params(query=q, conversation_id=conversation_id, limit=limit), principal
    )
