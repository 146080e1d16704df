"""The gateway app with the web client mounted, for browser tests run before the gateway mounts it itself.

``services.gateway.main`` calls ``mount_web_client`` once the lead wires it in; until
then the browser tests start the gateway through this module (same app, same runtime).
"""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway import main as gateway_main
from services.gateway.settings import get_settings
from services.gateway.web import mount_web_client
from shared.logging import configure_logging
from shared.runtime import serve
from shared.settings import get_common_settings


def serves_web_client(app: FastAPI) -> bool:
    return any(getattr(route, "path", None) == "/static/config.json" for route in app.routes)


def create_app() -> FastAPI:
    app = gateway_main.create_app()
    if not serves_web_client(app):
        mount_web_client(app)
    return app


def main() -> None:
    common, settings = get_common_settings(), get_settings()
    configure_logging("gateway", common.log_level, common.log_json)
    serve(
        "tests.browser.gateway_app:create_app",
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.ws_max_size,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
    )


if __name__ == "__main__":
    main()
