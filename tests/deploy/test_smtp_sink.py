"""The dev mail sink, as a real process: SMTP in, an HTML inbox and a JSON list out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self, store: Path | None = None) -> None:
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        argv = [
            sys.executable,
            "-m",
            "deploy.smtp_sink",
            "--smtp-port",
            str(self.smtp_port),
            "--http-port",
            str(self.http_port),
        ]
        if store is not None:
            argv += ["--store", str(store)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError("the mail sink did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink()
    yield running
    running.stop()


def message(to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Consultation chat <no-reply@chat.localhost>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<fixed-id@chat.localhost>"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


async def test_received_mail_is_listed_as_json_newest_first(sink: Sink) -> None:
    await aiosmtplib.send(
        message("ann@example.com", "first", "hello"), hostname="127.0.0.1", port=sink.smtp_port
    )
    await aiosmtplib.send(
        message("bob@example.com", "second", "hi"), hostname="127.0.0.1", port=sink.smtp_port
    )

    async with httpx.AsyncClient(base_url=sink.url) as client:
        listing = (await client.get("/api/messages")).json()
        assert [m["subject"] for m in listing] == ["second", "first"]
        assert listing[1]["rcpt_tos"] == ["ann@example.com"]
        assert listing[1]["text"].strip() == "hello"
        assert listing[1]["message_id"] == "<fixed-id@chat.localhost>"
        only_bob = (await client.get("/api/messages", params={"to": "BOB@example.com"})).json()
        assert [m["subject"] for m in only_bob] == ["second"]
        negotiated = await client.get("/", headers={"Accept": "application/json"})
        assert negotiated.json() == listing
        one = (await client.get(f"/api/messages/{listing[0]['id']}")).json()
        assert one["subject"] == "second"
        assert (await client.get("/api/messages/999")).status_code == 404
        assert (await client.delete("/api/messages")).status_code == 204
        assert (await client.get("/api/messages")).json() == []


async def test_inbox_page_shows_mail_and_escapes_what_it_received(sink: Sink) -> None:
    hostile = "<script>alert(1)</script>"
    await aiosmtplib.send(
        message("ann@example.com", f"New message {hostile}", "body", html=f"<p>hi</p>{hostile}"),
        hostname="127.0.0.1",
        port=sink.smtp_port,
    )
    async with httpx.AsyncClient(base_url=sink.url) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "ann@example.com" in page.text and "New message" in page.text
        assert hostile not in page.text
        mail_id = (await client.get("/api/messages")).json()[0]["id"]
        detail = await client.get(f"/messages/{mail_id}")
        assert "&lt;script&gt;" in detail.text and hostile not in detail.text
        assert "<iframe sandbox" in detail.text  # the HTML part is shown without scripts
        assert (await client.get("/messages/999")).status_code == 404


async def test_store_file_keeps_mail_across_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "mail.jsonl"
    first = Sink(store)
    try:
        await aiosmtplib.send(
            message("ann@example.com", "kept", "x"), hostname="127.0.0.1", port=first.smtp_port
        )
    finally:
        first.stop()
    second = Sink(store)
    try:
        listing = httpx.get(f"{second.url}/api/messages").json()
        assert [m["subject"] for m in listing] == ["kept"]
    finally:
        second.stop()
