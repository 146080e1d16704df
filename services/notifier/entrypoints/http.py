"""HTTP routes beyond health and metrics: the dev SMS inbox of the ``log`` provider."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.notifier.adapters.sms import DevInbox


def dev_inbox_router(inbox: DevInbox) -> APIRouter:
    """Only mounted with the ``log`` SMS provider in development: it shows full numbers and codes."""
    router = APIRouter(prefix="/dev")

    @router.get("/sms.json")
    async def sms_json() -> dict[str, list[dict[str, str]]]:
        return {
            "messages": [
                {"at": e.at.isoformat(), "to": e.to, "text": e.text, "id": e.id, "reference": e.reference}
                for e in inbox.entries
            ]
        }

    @router.get("/sms", response_class=HTMLResponse)
    async def sms_page() -> str:
        rows = "".join(
            f"<tr><td>{e.at:%H:%M:%S}</td><td>{html.escape(e.to)}</td><td>{html.escape(e.text)}</td></tr>"
            for e in inbox.entries
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Dev SMS inbox</title>"
            "<meta http-equiv='refresh' content='5'></head><body><h1>Dev SMS inbox</h1>"
            "<p>SMS the notifier would have sent (provider <code>log</code>). Newest first.</p>"
            "<table border='1' cellpadding='4'><tr><th>time (UTC)</th><th>to</th><th>text</th></tr>"
            f"{rows or '<tr><td colspan=3>nothing yet</td></tr>'}</table></body></html>"
        )

    return router
