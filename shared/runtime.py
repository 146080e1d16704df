"""Start a service's ASGI app under uvicorn with uvloop and safe WebSocket limits."""

from __future__ import annotations

import asyncio

import uvicorn


def serve(
    app: str,
    *,
    host: str,
    port: int,
    ws_max_size: int = 64 * 1024,
    ws_ping_interval: float = 20.0,
    ws_ping_timeout: float = 20.0,
    ws: str | type[asyncio.Protocol] = "websockets-sansio",
) -> None:
    """Run until SIGTERM/SIGINT; uvicorn then closes sockets and runs the lifespan's shutdown.

    ``ws`` may be a protocol class: uvicorn hands it every upgrade request (``config=``,
    ``server_state=``, ``app_state=``), so a service can serve WebSockets without ASGI.
    The ``ws_*`` limits apply to uvicorn's own protocols only.
    """
    uvicorn.run(
        app,
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws=ws,
        ws_max_size=ws_max_size,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
