"""The whole system as real processes: auth, store, notifier and gateway on loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support import infra
from tests.support.processes import ROOT, ServiceProcess, service
from tests.support.proxy import CuttableProxy
from tests.support.vonage_stub import VonageStub

ADMIN_PASSWORD = "admin-Passw0rd-e2e"


@dataclass
class Stack:
    env: dict[str, str]
    postgres: CuttableProxy
    rabbitmq: CuttableProxy
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    admin_username: str = ""
    admin_email: str = ""

    @property
    def auth(self) -> str:
        return self.processes["auth"].url

    @property
    def gateway(self) -> str:
        return self.processes["gateway"].url

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://") + "/ws"

    async def restart(self, name: str, *, kill: bool = False) -> None:
        process = self.processes[name]
        await process.terminate(signal.SIGKILL if kill else signal.SIGTERM)
        process.start()
        await process.wait_ready()

    async def register(self, client: httpx.AsyncClient, username: str, **extra: str) -> dict[str, object]:
        response = await client.post(
            f"{self.auth}/auth/register",
            json={"username": username, "password": f"{username}-long-secret-9", **extra},
        )
        assert response.status_code == 201, response.text
        body: dict[str, object] = response.json()
        return body

    async def login(self, client: httpx.AsyncClient, login: str, password: str) -> str:
        response = await client.post(f"{self.auth}/auth/login", json={"login": login, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


def ensure_admin(env: dict[str, str], username: str, email: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.auth.cli",
            "ensure-admin",
            "--username",
            username,
            "--password",
            ADMIN_PASSWORD,
            "--email",
            email,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="package")
async def stack_database_url(run_id: str) -> AsyncIterator[str]:
    """The stack's own database: nothing another test left in a table can reach these services."""
    async with infra.migrated_database(f"chat_e2e_{run_id}") as url:
        yield url


@pytest.fixture(scope="package")
def vonage() -> Iterator[VonageStub]:
    """SMS go through the real Vonage SDK to a local endpoint that answers like Vonage."""
    stub = VonageStub()
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture(scope="package")
async def stack(
    common_env: dict[str, str], run_id: str, stack_database_url: str, amqp_url: str, vonage: VonageStub
) -> AsyncIterator[Stack]:
    """Every service reaches PostgreSQL and RabbitMQ through proxies a test can cut."""
    database_url = stack_database_url
    postgres = CuttableProxy(infra.PG_HOST, infra.PG_PORT)
    rabbitmq = CuttableProxy(infra.AMQP_HOST, infra.AMQP_PORT)
    await postgres.start()
    await rabbitmq.start()
    env = {
        **common_env,
        "CHAT_DATABASE_URL": database_url.replace(f":{infra.PG_PORT}/", f":{postgres.port}/"),
        "CHAT_AMQP_URL": amqp_url.replace(f":{infra.AMQP_PORT}/", f":{rabbitmq.port}/"),
        **vonage.env(),
        "CHAT_AMQP_PREFIX": f"e2e{run_id}",
        # A second of grace: presence (from the gateway) and the unread event (from the store)
        # travel separately, and the decision must see where the recipient really is.
        "NOTIFIER_GRACE_WINDOW_S": "1",
        "NOTIFIER_IDLE_AFTER_S": "2",
        "AUTH_KEYS_DIR": str(ROOT / "var" / f"test-keys-{run_id}"),
        "AUTH_RATE_LIMIT_ENABLED": "false",
        "AUTH_ARGON2_TIME_COST": "1",
        "AUTH_ARGON2_MEMORY_KIB": "8192",
    }
    auth = service("auth", env)
    env["CHAT_JWKS_URL"] = f"{auth.url}/.well-known/jwks.json"
    stack = Stack(
        env=env,
        postgres=postgres,
        rabbitmq=rabbitmq,
        admin_username=f"admin{run_id}",
        admin_email=f"admin{run_id}@example.test",
    )
    stack.processes = {
        "auth": service("auth", env, auth.port),
        "store": service("store", env),
        "notifier": service("notifier", env),
        "gateway": service("gateway", env),
    }
    await asyncio.to_thread(ensure_admin, env, stack.admin_username, stack.admin_email)
    try:
        for process in stack.processes.values():
            process.start()
        await asyncio.gather(*(p.wait_ready() for p in stack.processes.values()))
        yield stack
    finally:
        await asyncio.gather(*(p.terminate() for p in stack.processes.values()))
        await postgres.stop()
        await rabbitmq.stop()
