"""``chat-notifier`` / ``python -m services.notifier.main``: workers in the lifespan, health on HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.notifier.bootstrap import NotifierRuntime
from services.notifier.entrypoints.http import dev_inbox_router
from services.notifier.settings import NotifierSettings, get_settings
from shared.logging import configure_logging
from shared.runtime import serve
from shared.settings import CommonSettings, get_common_settings
from shared.web import ReadyCheck
from shared.web import create_app as create_base_app


def create_app(runtime: NotifierRuntime | None = None) -> FastAPI:
    settings: NotifierSettings = runtime.settings if runtime else get_settings()
    common: CommonSettings = runtime.common if runtime else get_common_settings()
    rt = runtime or NotifierRuntime(settings=settings, common=common)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    def ready_checks(app: FastAPI) -> dict[str, ReadyCheck]:
        return {"database": rt.database_ready, "broker": rt.broker_ready}

    app = create_base_app(
        service="notifier",
        allowed_origins=common.allowed_origins,
        ready_checks=ready_checks,
        lifespan=lifespan,
    )
    app.state.runtime = rt
    if settings.sms_provider == "log" and common.is_development:
        app.include_router(dev_inbox_router(rt.inbox))
    return app


def main() -> None:
    common = get_common_settings()
    settings = get_settings()
    configure_logging("notifier", common.log_level, common.log_json)
    serve("services.notifier.main:create_app", host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
