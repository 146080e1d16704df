"""The infrastructure check that `make run` and `make test` start with, against the real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy import infra
from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_urls_are_parsed_into_host_port_and_user() -> None:
    pg = infra.endpoint("postgres", "postgresql+asyncpg://postgres@127.0.0.1:5432/chat")
    assert (pg.host, pg.port, pg.user, pg.local) == ("127.0.0.1", 5432, "postgres", True)
    mq = infra.endpoint("rabbitmq", "amqp://guest:guest@broker.internal/vhost")
    assert (mq.host, mq.port, mq.user, mq.local) == ("broker.internal", 5672, "guest", False)


def test_running_postgres_and_rabbitmq_greet_in_their_own_protocols() -> None:
    assert infra.greets(infra.endpoint("postgres", infra.DEFAULT_DATABASE_URL))
    assert infra.greets(infra.endpoint("rabbitmq", infra.DEFAULT_AMQP_URL))
    # Each greeting is protocol-specific: PostgreSQL does not pass for RabbitMQ.
    assert not infra.greets(infra.endpoint("rabbitmq", "amqp://guest:guest@127.0.0.1:5432/"))


def test_a_server_that_is_absent_gets_one_line_saying_how_to_get_it() -> None:
    port = free_port()
    for kind, url in (
        ("postgres", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/chat"),
        ("rabbitmq", f"amqp://guest:guest@127.0.0.1:{port}/"),
    ):
        ok, message = infra.ensure(infra.endpoint(kind, url), start=False)
        assert not ok
        assert "\n" not in message
        assert "docker compose up -d postgres rabbitmq" in message


def test_a_remote_server_is_never_started_here() -> None:
    assert infra.start_command(infra.endpoint("postgres", "postgresql://u@db.example:5432/x")) is None


def test_check_passes_and_logs_in_when_both_servers_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.infra", "--no-start"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL at 127.0.0.1:5432 is up" in result.stdout
    assert "RabbitMQ at 127.0.0.1:5672 is up" in result.stdout
