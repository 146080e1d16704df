"""The FastAPI application every service starts from: health, readiness, metrics, errors, origins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.origins import OriginAllowListMiddleware
from shared.problems import install_problem_handlers

ReadyCheck = Callable[[], Awaitable[bool]]


def create_app(
    *,
    service: str,
    allowed_origins: list[str],
    ready_checks: Callable[[FastAPI], dict[str, ReadyCheck]],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    **kwargs: Any,
) -> FastAPI:
    app = FastAPI(title=f"chat-{service}", lifespan=lifespan, **kwargs)
    install_problem_handlers(app)
    # Added last so it runs first: a foreign origin is refused before CORS or routing.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-CSRF-Token", "Idempotency-Key"],
        expose_headers=["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
        max_age=600,
    )
    app.add_middleware(OriginAllowListMiddleware, allowed_origins=allowed_origins)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results: dict[str, bool] = {}
        for name, check in ready_checks(app).items():
            try:
                results[name] = await check()
            except Exception:
                results[name] = False
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "service": service, "checks": results},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
