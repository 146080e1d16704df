"""Notifier fixtures: its own migrated database, a Vonage-like HTTPS endpoint, in-process runtimes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from services.notifier.adapters.tables import metadata
from services.notifier.bootstrap import NotifierRuntime
from services.notifier.settings import NotifierSettings
from shared.events import EventBase
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from shared.settings import CommonSettings
from tests.notifier.helpers import FakeClock
from tests.support.smtp import SmtpServer
from tests.support.vonage_stub import VonageStub


@pytest.fixture(scope="session")
def vonage_server() -> Iterator[VonageStub]:
    stub = VonageStub()
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def vonage(vonage_server: VonageStub) -> VonageStub:
    vonage_server.state.messages.clear()
    vonage_server.state.fail_next.clear()
    return vonage_server


@pytest.fixture
def prefix() -> str:
    """A fresh exchange/queue prefix per test, so no test sees another's messages."""
    return f"nt{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def clean_db(database_url: str) -> None:
    from shared.db import make_engine

    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            names = ", ".join(f'notifier."{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names}"))
    finally:
        await engine.dispose()


Publish = Callable[[EventBase], Awaitable[None]]


@pytest.fixture
async def publish(amqp_url: str, prefix: str) -> AsyncIterator[Publish]:
    """Publish catalogued events to this test's events exchange, with confirms."""
    broker = Broker(amqp_url, Topology(prefix=prefix), service="notifier-test")
    await broker.start()

    async def send(event: EventBase) -> None:
        await broker.publisher.publish_event(event)

    try:
        yield send
    finally:
        await broker.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StartNotifier = Callable[..., Awaitable[NotifierRuntime]]


@pytest.fixture
async def notifier(
    database_url: str,
    amqp_url: str,
    prefix: str,
    smtp: SmtpServer,
    clean_db: None,
) -> AsyncIterator[StartNotifier]:
    """Start an in-process notifier (consumer, scheduler, dispatcher, RPC) with settings overrides."""
    started: list[NotifierRuntime] = []

    async def start(*, clock: Any = None, **overrides: Any) -> NotifierRuntime:
        values: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "grace_window_s": 0,
            "scheduler_poll_s": 0.2,
            "retry_initial_s": 0.02,
            "retry_max_s": 0.1,
            "idle_after_s": 300,
        }
        values.update(overrides)
        runtime = NotifierRuntime(
            settings=NotifierSettings(**values),
            common=CommonSettings(
                environment="test", database_url=database_url, amqp_url=amqp_url, amqp_prefix=prefix
            ),
            **({"clock": clock} if clock is not None else {}),
        )
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()
