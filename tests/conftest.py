"""Session fixtures: one fresh database (migrated) and one fresh vhost per test run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import infra
from tests.support.smtp import SmtpServer

RUN_ID = infra.run_id()


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with infra.migrated_database(f"chat_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    vhost = f"chat_test_{RUN_ID}"
    infra.create_vhost(vhost)
    try:
        yield infra.amqp_url(vhost)
    finally:
        infra.delete_vhost(vhost)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The session's SMTP server with an empty mailbox."""
    smtp_server.sink.messages.clear()
    smtp_server.sink.fail_next.clear()
    return smtp_server


@pytest.fixture(scope="session")
def common_env(database_url: str, amqp_url: str, smtp_server: SmtpServer) -> dict[str, str]:
    """Environment for service processes started by end-to-end tests."""
    return {
        "CHAT_ENVIRONMENT": "test",
        "CHAT_DATABASE_URL": database_url,
        "CHAT_AMQP_URL": amqp_url,
        "CHAT_LOG_LEVEL": "INFO",
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(smtp_server.port),
        "NOTIFIER_GRACE_WINDOW_S": "0",
    }
