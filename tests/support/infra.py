"""Per-run isolation on the real servers: a fresh database and a fresh vhost, removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator

import asyncpg

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("TEST_AMQP_PORT", "5672"))


def run_id() -> str:
    return uuid.uuid4().hex[:10]


def admin_dsn(database: str = "postgres") -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def sqlalchemy_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def create_database(name: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(name: str) -> None:
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name)


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{vhost}"


@contextlib.asynccontextmanager
async def migrated_database(name: str) -> AsyncIterator[str]:
    """A fresh database with every service's migrations, dropped afterwards.

    A suite that starts service processes takes its own: their relays and
    schedulers must never see rows another suite left behind, or steal its work.
    """
    from shared.migrations import upgrade_all

    await create_database(name)
    url = sqlalchemy_url(name)
    try:
        await asyncio.to_thread(upgrade_all, url)
        yield url
    finally:
        await drop_database(name)
