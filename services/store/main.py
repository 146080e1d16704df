"""Store process: RPC server, event consumer and outbox relay, with /healthz /readyz /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.store.bootstrap import Store, build_store
from services.store.settings import get_settings
from shared.db import database_ready
from shared.logging import configure_logging
from shared.runtime import serve
from shared.settings import get_common_settings
from shared.web import ReadyCheck
from shared.web import create_app as create_web_app


def create_app() -> FastAPI:
    common, settings = get_common_settings(), get_settings()
    configure_logging("store", common.log_level, common.log_json)
    store = build_store(common, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store
        await store.start()
        try:
            yield
        finally:
            await store.stop()

    def checks(app: FastAPI) -> dict[str, ReadyCheck]:
        s: Store = app.state.store

        async def broker() -> bool:
            return s.broker.is_ready()

        return {"database": lambda: database_ready(s.engine), "broker": broker}

    return create_web_app(
        service="store", allowed_origins=common.allowed_origins, ready_checks=checks, lifespan=lifespan
    )


def main() -> None:
    common, settings = get_common_settings(), get_settings()
    configure_logging("store", common.log_level, common.log_json)
    serve("services.store.main:create_app", host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
