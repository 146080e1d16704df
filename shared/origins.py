"""Origin allow-list: CORS for allowed origins, 403 for every other origin.

Starlette's ``CORSMiddleware`` only decides which headers to add; it never
refuses a request, so a foreign page could still cause side effects with the
user's cookies. This middleware answers 403 before the app runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problems import problem_response


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """No ``Origin`` (server-to-server, curl) is allowed; a present one must be listed."""
    if origin is None:
        return True
    return origin.rstrip("/") in set(allowed)


class OriginAllowListMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
            if not origin_allowed(origin, self.allowed):
                if scope["type"] == "websocket":
                    # Closing before accept makes the server refuse the handshake with 403:
                    # cross-site WebSocket hijacking stops here.
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = problem_response(403, "Origin not allowed", code="origin_not_allowed")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
