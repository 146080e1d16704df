"""Dev mail sink: a real SMTP server (aiosmtpd) that keeps what it receives and shows it on a web page.

``python -m deploy.smtp_sink`` listens for SMTP on 127.0.0.1:1025 (the notifier's
default target) and serves, on http://127.0.0.1:8025/, an HTML inbox for people and
a JSON list for scripts and browser tests (``GET /api/messages``, or ``/`` with
``Accept: application/json``). Nothing is relayed anywhere. Messages live in memory
(the newest ``--keep``), and are appended to ``--store FILE`` as JSON lines when given,
so a restarted sink shows them again.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import json
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse


@dataclass
class Mail:
    """One received message, flattened for display."""

    id: int
    received_at: str
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    message_id: str
    text: str
    html: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0


def parse_mail(mail_id: int, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Mail:
    """Decode a raw RFC 5322 message into its subject, text and HTML parts."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return Mail(
        id=mail_id,
        received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        mail_from=mail_from,
        rcpt_tos=list(rcpt_tos),
        subject=str(message.get("Subject", "")),
        message_id=str(message.get("Message-ID", "")),
        text=text_part.get_content() if text_part is not None else "",
        html=html_part.get_content() if html_part is not None else "",
        headers=[(k, str(v)) for k, v in message.items()],
        size=len(raw),
    )


class Mailbox:
    """Received mail, newest last; optionally mirrored to a JSON-lines file."""

    def __init__(self, keep: int = 1000, store: Path | None = None) -> None:
        self.messages: deque[Mail] = deque(maxlen=keep)
        self.store = store
        self._next_id = 1
        if store is not None and store.exists():
            for line in store.read_text(encoding="utf-8").splitlines():
                with_headers = json.loads(line)
                with_headers["headers"] = [tuple(h) for h in with_headers.get("headers", [])]
                self.messages.append(Mail(**with_headers))
            if self.messages:
                self._next_id = self.messages[-1].id + 1

    def add(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Mail:
        mail = parse_mail(self._next_id, mail_from, rcpt_tos, raw)
        self._next_id += 1
        self.messages.append(mail)
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            with self.store.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(mail)) + "\n")
        return mail

    def get(self, mail_id: int) -> Mail | None:
        return next((m for m in self.messages if m.id == mail_id), None)

    def listing(self, to: str | None = None) -> list[Mail]:
        """Newest first, optionally only those addressed to ``to``."""
        found = [m for m in self.messages if to is None or to.lower() in (r.lower() for r in m.rcpt_tos)]
        return list(reversed(found))

    def clear(self) -> None:
        self.messages.clear()
        if self.store is not None and self.store.exists():
            self.store.unlink()


class SinkHandler:
    """aiosmtpd handler: accept every message and file it in the mailbox."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        self.mailbox.add(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], raw)
        return "250 OK: kept by the dev mail sink"


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#243047;color:#fff;padding:12px 20px}header a{color:#cfe0ff}
main{max-width:1000px;margin:20px auto;padding:0 16px}
table{width:100%;border-collapse:collapse;background:#fff}
th,td{padding:8px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
tr:hover td{background:#f0f4fb}.muted{color:#687385;font-size:13px}
pre{white-space:pre-wrap;background:#fff;padding:12px;border:1px solid #e3e6ea}
iframe{width:100%;height:420px;border:1px solid #e3e6ea;background:#fff}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;background:#fff;padding:12px}
"""


def _page(title: str, body: str, *, poll_count: int | None = None) -> str:
    # The list page reloads itself when a new message arrives, so a person sees the mail come in.
    script = ""
    if poll_count is not None:
        script = (
            "<script>setInterval(async()=>{try{const r=await fetch('/api/messages/count');"
            f"const j=await r.json();if(j.count!=={poll_count})location.reload()"
            "}catch(e){}},1500)</script>"
        )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head>"
        f"<body><header><strong>Dev mail inbox</strong> &middot; <a href='/'>all messages</a> &middot; "
        f"<a href='/api/messages'>JSON</a></header><main>{body}</main>{script}</body></html>"
    )


def render_inbox(mails: list[Mail], total: int) -> str:
    if not mails:
        empty = "No mail yet: messages sent to this SMTP sink appear here."
        rows = f"<tr><td colspan=4 class=muted>{empty}</td></tr>"
    else:
        rows = "".join(
            f"<tr><td class=muted>{html.escape(m.received_at[11:19])}</td>"
            f"<td>{html.escape(', '.join(m.rcpt_tos))}</td>"
            f"<td><a href='/messages/{m.id}'>{html.escape(m.subject) or '(no subject)'}</a></td>"
            f"<td class=muted>{html.escape(m.mail_from)}</td></tr>"
            for m in mails
        )
    body = (
        f"<h1>Inbox <span class=muted>({len(mails)})</span></h1>"
        f"<table><thead><tr><th>time (UTC)</th><th>to</th><th>subject</th><th>from</th></tr></thead>"
        f"<tbody id=messages>{rows}</tbody></table>"
    )
    return _page("Dev mail inbox", body, poll_count=total)


def render_mail(mail: Mail) -> str:
    headers = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in mail.headers)
    parts = f"<h2>Text</h2><pre>{html.escape(mail.text) or '(no text part)'}</pre>"
    if mail.html:
        # Shown in a sandbox without scripts: mail HTML is untrusted input.
        parts += f'<h2>HTML</h2><iframe sandbox srcdoc="{html.escape(mail.html, quote=True)}"></iframe>'
    body = f"<h1>{html.escape(mail.subject) or '(no subject)'}</h1><dl>{headers}</dl>{parts}"
    return _page(mail.subject or "message", body)


def create_app(mailbox: Mailbox, *, smtp_host: str = "127.0.0.1", smtp_port: int = 1025) -> FastAPI:
    """The HTTP side; its lifespan also runs the SMTP server on the same event loop."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        handler = SinkHandler(mailbox)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="dev-mail-sink", data_size_limit=10 * 1024 * 1024),
            host=smtp_host,
            port=smtp_port,
        )
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    app = FastAPI(title="dev mail sink", lifespan=lifespan, docs_url=None, redoc_url=None)

    def _json(mails: list[Mail]) -> JSONResponse:
        return JSONResponse([asdict(m) for m in mails])

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "smtp": f"{smtp_host}:{smtp_port}", "messages": len(mailbox.messages)}

    @app.get("/", response_model=None)
    async def inbox(request: Request, to: str | None = None) -> Response:
        mails = mailbox.listing(to)
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/html" not in accept:
            return _json(mails)
        return HTMLResponse(render_inbox(mails, len(mailbox.messages)))

    @app.get("/api/messages")
    async def list_messages(to: str | None = None) -> JSONResponse:
        return _json(mailbox.listing(to))

    @app.get("/api/messages/count")
    async def count() -> dict[str, int]:
        return {"count": len(mailbox.messages)}

    @app.get("/api/messages/{mail_id}")
    async def get_message(mail_id: int) -> JSONResponse:
        mail = mailbox.get(mail_id)
        if mail is None:
            return JSONResponse({"title": "no such message", "status": 404}, status_code=404)
        return JSONResponse(asdict(mail))

    @app.delete("/api/messages", status_code=204)
    async def clear() -> Response:
        mailbox.clear()
        return Response(status_code=204)

    @app.get("/messages/{mail_id}", response_class=HTMLResponse)
    async def show_message(mail_id: int) -> HTMLResponse:
        mail = mailbox.get(mail_id)
        if mail is None:
            return HTMLResponse(_page("not found", "<h1>No such message</h1>"), status_code=404)
        return HTMLResponse(render_mail(mail))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.smtp_sink", description=__doc__.splitlines()[0])
    env = os.environ
    parser.add_argument(
        "--host", default=env.get("SINK_HOST", "127.0.0.1"), help="bind address for both ports"
    )
    parser.add_argument("--smtp-port", type=int, default=int(env.get("SINK_SMTP_PORT", "1025")))
    parser.add_argument("--http-port", type=int, default=int(env.get("SINK_HTTP_PORT", "8025")))
    parser.add_argument("--keep", type=int, default=1000, help="messages kept in memory")
    parser.add_argument(
        "--store", type=Path, default=Path(env["SINK_STORE"]) if env.get("SINK_STORE") else None
    )
    args = parser.parse_args()
    mailbox = Mailbox(keep=args.keep, store=args.store)
    app = create_app(mailbox, smtp_host=args.host, smtp_port=args.smtp_port)
    print(
        f"dev mail sink: SMTP on {args.host}:{args.smtp_port}, inbox on http://{args.host}:{args.http_port}/"
    )
    uvicorn.run(app, host=args.host, port=args.http_port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
