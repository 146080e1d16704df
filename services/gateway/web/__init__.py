"""The browser client the gateway serves: a page at ``/`` and its assets under ``/static/``.

Plain HTML, CSS and ES modules next to this file; nothing is built at run time.
``/static/config.json`` tells the page where the auth service and the dev
inboxes live, so one page works on any ports.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from shared.problems import Problem

__all__ = ["PAGE_PATHS", "WEB_DIR", "mount_web_client", "web_config"]

WEB_DIR = Path(__file__).resolve().parent
PAGE_PATHS = ("/", "/verify-email", "/reset-password")
_ASSET = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\.(?:js|css|svg|html)$")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# The page is static and tiny: revalidate every time so a deploy is seen at once.
_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    **_CACHE,
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss: http: https:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _on_page_host(url: str, request: Request) -> str:
    """A loopback URL on the page's own loopback name: ``localhost`` pages stay one site for cookies."""
    parts = urlsplit(url)
    page_host = request.url.hostname or ""
    if parts.hostname in _LOOPBACK and page_host in _LOOPBACK and parts.hostname != page_host:
        host = f"[{page_host}]" if ":" in page_host else page_host
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    return url


def _same_host_port(request: Request, port: int) -> str:
    """The request's host on another port: keeps ``localhost`` and ``127.0.0.1`` pages consistent."""
    host = request.url.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}"


def web_config(
    request: Request,
    *,
    auth_url: str | None = None,
    mail_inbox_url: str | None = None,
    sms_inbox_url: str | None = None,
) -> dict[str, str]:
    """Where the page finds auth and the dev inboxes: arguments, then ``WEB_*`` env, then dev defaults.

    The auth URL defaults to the origin of ``CHAT_JWKS_URL`` (auth serves the JWKS),
    so a test that starts auth on a random port needs no extra setting.
    """
    jwks = os.environ.get("CHAT_JWKS_URL", "")
    auth = auth_url or os.environ.get("WEB_AUTH_URL") or _origin_of(jwks) or _same_host_port(request, 8001)
    mail = mail_inbox_url or os.environ.get("WEB_MAIL_INBOX_URL") or _same_host_port(request, 8025) + "/"
    sms = sms_inbox_url or os.environ.get("WEB_SMS_INBOX_URL") or _same_host_port(request, 8003) + "/dev/sms"
    mode = os.environ.get("WEB_AUTH_MODE", "bearer")
    return {
        "auth_url": _on_page_host(auth.rstrip("/"), request),
        "auth_mode": mode if mode in ("bearer", "cookie") else "bearer",
        "gateway_url": "",
        "mail_inbox_url": mail,
        "sms_inbox_url": sms,
    }


def mount_web_client(
    app: FastAPI,
    *,
    auth_url: str | None = None,
    mail_inbox_url: str | None = None,
    sms_inbox_url: str | None = None,
) -> None:
    """Serve the page at ``PAGE_PATHS``, ``/static/config.json`` and ``/static/<asset>``."""

    async def web_index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_PAGE_HEADERS)

    # The page itself, and the paths of the links auth mails (``AUTH_FRONTEND_BASE_URL``).
    for path in PAGE_PATHS:
        app.add_api_route(path, web_index, methods=["GET"], include_in_schema=False)

    @app.get("/static/config.json", include_in_schema=False)
    async def web_client_config(request: Request) -> JSONResponse:
        config = web_config(
            request, auth_url=auth_url, mail_inbox_url=mail_inbox_url, sms_inbox_url=sms_inbox_url
        )
        return JSONResponse(config, headers=_CACHE)

    @app.get("/static/{name}", include_in_schema=False)
    async def web_asset(name: str) -> Response:
        # An allow-list of names in this one folder: no traversal, no Python sources served.
        path = WEB_DIR / name
        if not _ASSET.fullmatch(name) or not path.is_file():
            raise Problem(404, "Not found", code="not_found", detail=f"no static file {name!r}")
        return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_CACHE)
