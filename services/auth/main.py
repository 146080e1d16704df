"""Auth service process: ``python -m services.auth.main`` or ``chat-auth``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.auth.bootstrap import build_runtime
from services.auth.entrypoints.http import install_routes
from services.auth.settings import AuthSettings, get_auth_settings
from shared.db import database_ready
from shared.logging import configure_logging, get_logger
from shared.runtime import serve
from shared.settings import CommonSettings, get_common_settings
from shared.web import ReadyCheck
from shared.web import create_app as create_base_app

log = get_logger(__name__)

DESCRIPTION = """Accounts, ES256 access tokens (JWKS at `/.well-known/jwks.json`), rotating refresh tokens,
phone verification by SMS code, shared rate limits. Every error is an RFC 9457 problem document."""


def create_app(settings: AuthSettings | None = None, common: CommonSettings | None = None) -> FastAPI:
    """Build the app; the lifespan starts the broker and the outbox relay and stops them on shutdown."""
    settings = settings or get_auth_settings()
    common = common or get_common_settings()
    runtime = build_runtime(settings, common)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        log.info(
            "auth_started", kids=list(runtime.context.keys.keys), active_kid=runtime.context.keys.active.kid
        )
        try:
            yield
        finally:
            await runtime.stop()

    def ready_checks(_: FastAPI) -> dict[str, ReadyCheck]:
        async def broker_ready() -> bool:
            return runtime.broker.is_ready()

        async def db_ready() -> bool:
            return await database_ready(runtime.context.engine)

        return {"database": db_ready, "broker": broker_ready}

    app = create_base_app(
        service="auth",
        allowed_origins=common.allowed_origins,
        ready_checks=ready_checks,
        lifespan=lifespan,
        description=DESCRIPTION,
        version="1.0.0",
    )
    app.state.auth = runtime.context
    app.state.runtime = runtime
    install_routes(app, runtime.context)
    return app


def main() -> None:
    common = get_common_settings()
    settings = get_auth_settings()
    configure_logging("auth", common.log_level, common.log_json)
    serve("services.auth.main:create_app", host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
