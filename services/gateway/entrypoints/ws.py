"""``/ws``: authenticate the handshake, then read frames until the client leaves.

The Origin allow-list runs before this (``shared.origins``): a foreign page's
handshake is refused with 403 and never reaches the endpoint.
"""

from __future__ import annotations

import contextlib

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.gateway.connection import CLOSE_TOKEN_EXPIRED, Connection, frame_text
from services.gateway.domain.tokens import chosen_subprotocol, token_from_request
from services.gateway.hub import Hub
from shared.security import InvalidToken, KeysUnavailable, Principal

CLOSE_TRY_AGAIN = 1013


async def _deny(websocket: WebSocket, detail: str) -> None:
    """Close with 4001 right after the handshake: browsers see a close code, never a bare HTTP status."""
    await websocket.accept()
    await websocket.close(CLOSE_TOKEN_EXPIRED, detail)


class WebSocketEndpoint:
    """A plain ASGI app: no per-connection dependency scopes or handler wrappers (memory per socket)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await websocket_endpoint(WebSocket(scope, receive, send))


route = WebSocketRoute("/ws", WebSocketEndpoint())


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    settings = hub.settings
    token = token_from_request(websocket.headers, websocket.cookies, settings.access_cookie)
    if token is None:
        await _deny(websocket, "missing access token")
        return
    try:
        principal: Principal = await hub.verifier.verify(token)
    except KeysUnavailable:
        # Not the token's fault: 1013 says "try again later", 4001 would make the client drop it.
        await websocket.accept()
        await websocket.close(CLOSE_TRY_AGAIN, "cannot verify tokens right now")
        return
    except (InvalidToken, Exception):
        await _deny(websocket, "invalid access token")
        return
    await websocket.accept(subprotocol=chosen_subprotocol(websocket.headers, settings.subprotocol))
    conn = Connection(websocket, principal, hub)
    try:
        await hub.attach(conn)
        # Sent before the writer starts: live frames wait for the client's first frame (its resume).
        await websocket.send_text(
            frame_text(
                "hello",
                user_id=conn.user,
                role=principal.role,
                connection_id=conn.id,
                expires_at=principal.expires_at,
                limits={
                    "max_frame_bytes": settings.max_frame_bytes,
                    "rate_per_s": settings.rate_per_s,
                    "rate_burst": settings.rate_burst,
                    "replay_max": settings.replay_max,
                    "idle_after_s": settings.idle_after_s,
                },
            )
        )
        conn.start()
        while not conn.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            await conn.handle(raw)
    except WebSocketDisconnect:
        pass
    finally:
        await hub.detach(conn)
        await conn.stop()
        with contextlib.suppress(Exception):
            if not conn.closed:
                await websocket.close(1000)
