"""Browser fixtures: the four real services on loopback ports and Debian's headless Chromium.

Playwright drives ``/usr/bin/chromium`` through ``executable_path``; no browser
is ever downloaded (``deploy/ensure_chromium.sh`` installs the Debian package).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support import infra
from tests.support.processes import LOG_DIR, ROOT, ServiceProcess, service
from tests.support.smtp import free_port

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FLOOD_CAP = 12
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
# Generous waits: these machines have two cores, often shared with other test suites.
expect.set_options(timeout=15_000)


@dataclass
class Admin:
    username: str
    password: str
    email: str


@dataclass
class Stack:
    """The running services and the URLs a browser uses."""

    auth: ServiceProcess
    store: ServiceProcess
    notifier: ServiceProcess
    gateway: ServiceProcess
    admin: Admin
    mail: MailSink
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def web_url(self) -> str:
        return self.gateway.url

    @property
    def sms_inbox_url(self) -> str:
        return f"{self.notifier.url}/dev/sms"


def _ensure_admin(env: dict[str, str], admin: Admin) -> None:
    """Create the administrator the way ``make run`` does: through auth's CLI."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.auth.cli",
            "ensure-admin",
            "--username",
            admin.username,
            "--password",
            admin.password,
            "--email",
            admin.email,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ensure-admin failed: {result.stdout}\n{result.stderr}")


@dataclass
class MailSink:
    """``deploy/smtp_sink.py`` as a process: the dev mail inbox a person would open."""

    smtp_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "deploy.smtp_sink", "--smtp-port", str(self.smtp_port)]
        command += ["--http-port", str(self.http_port)]
        with (LOG_DIR / f"smtp_sink-{self.http_port}.log").open("ab") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError("the dev SMTP sink exited; see tests/artifacts/logs")
                try:
                    if (await client.get(f"{self.url}healthz", timeout=1.0)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("the dev SMTP sink did not start")

    async def messages(self, to: str | None = None) -> list[dict[str, object]]:
        async with httpx.AsyncClient() as client:
            params = {"to": to} if to else {}
            response = await client.get(f"{self.url}api/messages", params=params, timeout=5.0)
            response.raise_for_status()
            body = response.json()
            return list(body["messages"] if isinstance(body, dict) else body)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
async def mail_sink() -> AsyncIterator[MailSink]:
    sink = MailSink(smtp_port=free_port(), http_port=free_port())
    sink.start()
    try:
        await sink.wait_ready()
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="package")
async def browser_database_url(run_id: str) -> AsyncIterator[str]:
    async with infra.migrated_database(f"chat_browser_{run_id}") as url:
        yield url


@pytest.fixture(scope="package")
async def stack(
    common_env: dict[str, str], mail_sink: MailSink, browser_database_url: str, run_id: str
) -> AsyncIterator[Stack]:
    keys_dir = tempfile.mkdtemp(prefix="chat-browser-keys-")
    auth_port, gateway_port, notifier_port = free_port(), free_port(), free_port()
    gateway_origins = [f"http://127.0.0.1:{gateway_port}", f"http://localhost:{gateway_port}"]
    env = {
        **common_env,
        "CHAT_DATABASE_URL": browser_database_url,
        "CHAT_AMQP_PREFIX": f"browser{run_id}",
        "CHAT_JWKS_URL": f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
        "CHAT_ALLOWED_ORIGINS": ",".join(gateway_origins),
        "CHAT_LOG_JSON": "true",
        "AUTH_KEYS_DIR": keys_dir,
        "AUTH_COOKIE_SECURE": "false",
        "AUTH_FRONTEND_BASE_URL": gateway_origins[0],
        # Several browser registrations and logins come from one loopback address.
        "AUTH_RATE_LIMIT_ENABLED": "false",
        # Low enough for one test to reach, high enough for every other conversation here.
        "STORE_FLOOD_CAP_PER_MINUTE": str(FLOOD_CAP),
        "NOTIFIER_SMTP_PORT": str(mail_sink.smtp_port),
        "WEB_MAIL_INBOX_URL": mail_sink.url,
        "WEB_SMS_INBOX_URL": f"http://127.0.0.1:{notifier_port}/dev/sms",
    }
    admin = Admin(
        username="admin.browser", password="Admin-browser-pass-42", email="admin.browser@example.test"
    )
    auth = service("auth", env, port=auth_port)
    store = service("store", env)
    notifier = service("notifier", env, port=notifier_port)
    gateway = service("gateway", env, port=gateway_port)
    started: list[ServiceProcess] = []
    try:
        for proc in (auth, store, notifier, gateway):
            proc.start()
            started.append(proc)
        # The administrator is created while the services boot (both take seconds).
        await asyncio.gather(
            asyncio.to_thread(_ensure_admin, env, admin), *(p.wait_ready(timeout=45) for p in started)
        )
        yield Stack(
            auth=auth,
            store=store,
            notifier=notifier,
            gateway=gateway,
            admin=admin,
            mail=mail_sink,
            processes=started,
        )
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in started))


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run deploy/ensure_chromium.sh (Debian's chromium package)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


NewPage = Callable[[], Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser, stack: Stack) -> AsyncIterator[NewPage]:
    """Open pages in fresh browser contexts (separate storage: one person each)."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    async def make() -> Page:
        context = await browser.new_context(viewport={"width": 1280, "height": 800}, base_url=stack.web_url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        return page

    yield make
    for context in contexts:
        try:
            await context.close()
        except Exception:  # already closed by the test (the user "left")
            pass
    assert not errors, f"JavaScript errors in the page: {errors}"


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
