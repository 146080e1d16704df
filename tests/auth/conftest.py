"""Auth test fixtures: an in-process auth app on the real database and broker, clients, an event tap."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from services.auth.main import create_app
from services.auth.settings import AuthSettings
from shared.events import EventBase, parse_event
from shared.settings import CommonSettings

ALLOWED_ORIGIN = "https://app.example.test"
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
_ips = itertools.count(1)


def fresh_ip() -> str:
    """A distinct client address per test, so IP-keyed counters never leak between tests."""
    n = next(_ips)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-keys")


@pytest.fixture(scope="session")
def common_settings(database_url: str, amqp_url: str) -> CommonSettings:
    return CommonSettings(
        environment="test",
        database_url=database_url,
        amqp_url=amqp_url,
        allowed_origins=[ALLOWED_ORIGIN],
        outbox_poll_interval_s=0.5,
    )


@pytest.fixture(scope="session")
def make_settings(keys_dir: Path) -> Callable[..., AuthSettings]:
    def make(**overrides: Any) -> AuthSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "keys_dir": keys_dir,
            "frontend_base_url": "https://app.example.test",
            **CHEAP_ARGON2,
            **overrides,
        }
        return AuthSettings(**values)

    return make


class RunningApp:
    """An auth app with its lifespan running (broker, outbox relay)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._cm: Any = None

    async def __aenter__(self) -> RunningApp:
        self._cm = self.app.router.lifespan_context(self.app)
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)

    def client(self, ip: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip or fresh_ip(), 40000))
        return httpx.AsyncClient(transport=transport, base_url="https://auth.test", **kwargs)


@pytest.fixture(scope="session")
async def auth_app(
    make_settings: Callable[..., AuthSettings], common_settings: CommonSettings
) -> AsyncIterator[RunningApp]:
    """The shared app: real rules, generous limits except where a test builds its own app."""
    app = create_app(make_settings(), common_settings)
    async with RunningApp(app) as running:
        yield running


@pytest.fixture
async def client(auth_app: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with auth_app.client() as c:
        yield c


StartApp = Callable[..., RunningApp]


@pytest.fixture
def start_app(make_settings: Callable[..., AuthSettings], common_settings: CommonSettings) -> StartApp:
    """An extra app with custom settings (tight limits, short cooldowns); use as ``async with``."""

    def start(**overrides: Any) -> RunningApp:
        return RunningApp(create_app(make_settings(**overrides), common_settings))

    return start


class EventTap:
    """A temporary queue bound to the events exchange: what auth really published."""

    def __init__(self, amqp_url: str, exchange: str, keys: tuple[str, ...]) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.keys = keys
        self.events: list[EventBase] = []
        self._conn: Any = None

    async def __aenter__(self) -> EventTap:
        self._conn = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in self.keys:
            await queue.bind(exchange, routing_key=key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.events.append(parse_event(message.body))

        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()

    async def wait_for(
        self, event_type: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 10.0
    ) -> Any:
        async def poll() -> Any:
            while True:
                for event in self.events:
                    if getattr(event, "type", None) == event_type and predicate(event):
                        return event
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def events(amqp_url: str, common_settings: CommonSettings) -> AsyncIterator[EventTap]:
    exchange = f"{common_settings.amqp_prefix}.events"
    keys = (
        "user.registered",
        "user.updated",
        "otp.requested",
        "email.verification_requested",
        "password.reset_requested",
    )
    async with EventTap(amqp_url, exchange, keys) as tap:
        yield tap


def unique(prefix: str = "user") -> str:
    return f"{prefix}{next(_ips)}x{os.getpid() % 1000}"


STRONG_PASSWORD = "correct horse battery staple"


async def register(
    client: httpx.AsyncClient, username: str | None = None, password: str = STRONG_PASSWORD, **extra: Any
) -> dict[str, Any]:
    """Register and return the token response (asserts 201)."""
    body = {"username": username or unique(), "password": password, **extra}
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.auth.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def cli_env(database_url: str, keys_dir: Any) -> dict[str, str]:
    return {
        "CHAT_DATABASE_URL": database_url,
        "CHAT_ENVIRONMENT": "test",
        "AUTH_KEYS_DIR": str(keys_dir),
        "AUTH_ARGON2_TIME_COST": "1",
        "AUTH_ARGON2_MEMORY_KIB": "1024",
    }


@pytest.fixture(scope="session")
async def admin_token(auth_app: RunningApp, cli_env: dict[str, str]) -> str:
    """An administrator made by the bootstrap CLI, logged in."""
    username = unique("root")
    result = await asyncio.to_thread(
        run_cli, cli_env, "ensure-admin", "--username", username, "--password", STRONG_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    async with auth_app.client() as client:
        response = await client.post("/auth/login", json={"login": username, "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
