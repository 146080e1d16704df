"""Gateway process: REST under /api, the WebSocket at /ws (``entrypoints.ws``, outside ASGI), presence,
with /healthz /readyz /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.gateway.bootstrap import Gateway, build_gateway
from services.gateway.entrypoints import http, notifications, ws
from services.gateway.settings import get_settings
from services.gateway.web import mount_web_client
from shared.db import database_ready
from shared.logging import configure_logging
from shared.runtime import serve
from shared.settings import get_common_settings
from shared.web import ReadyCheck
from shared.web import create_app as create_web_app


def create_app() -> FastAPI:
    common, settings = get_common_settings(), get_settings()
    configure_logging("gateway", common.log_level, common.log_json)
    gateway = build_gateway(common, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = gateway
        app.state.hub = gateway.hub
        await gateway.start()
        # The /ws protocol (outside the ASGI stack) finds the hub and the Origin allow-list here.
        app.state.ws = ws.WsContext(gateway.hub, common.allowed_origins)
        app.state.ws.start()
        try:
            yield
        finally:
            await gateway.stop()

    def checks(app: FastAPI) -> dict[str, ReadyCheck]:
        g: Gateway = app.state.gateway

        async def broker() -> bool:
            return g.broker.is_ready()

        return {"database": lambda: database_ready(g.engine), "broker": broker}

    app = create_web_app(
        service="gateway",
        allowed_origins=common.allowed_origins,
        ready_checks=checks,
        lifespan=lifespan,
        description="Consultation chat REST API; the WebSocket frames are in docs/protocol.md",
    )
    app.include_router(http.router)
    app.include_router(notifications.router)
    mount_web_client(app)
    return app


def main() -> None:
    common, settings = get_common_settings(), get_settings()
    configure_logging("gateway", common.log_level, common.log_json)
    serve(
        "services.gateway.main:create_app",
        host=settings.host,
        port=settings.port,
        ws=ws.GatewayWebSocket,  # sizes and keepalive come from the gateway settings
    )


if __name__ == "__main__":
    main()
