"""Make sure PostgreSQL and RabbitMQ answer before anything else runs (``make run`` / ``make test``).

For each server: if it answers, done. If it does not, and it runs on this machine and
is installed here, start it (``pg_ctlcluster ... start``, ``rabbitmq-server -detached``)
and wait until it answers. If it is not installed, print one line saying how to get
it and exit 1. Answering means the real protocol greets us and the configured user
can log in, not merely that a port is open. Standard library plus asyncpg/aio-pika.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/chat"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
HOW_TO_GET = (
    "run `docker compose up -d postgres rabbitmq` "
    "(or `apt-get install postgresql rabbitmq-server`), then try again"
)


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "postgres" | "rabbitmq"
    host: str
    port: int
    user: str
    url: str

    @property
    def label(self) -> str:
        name = "PostgreSQL" if self.kind == "postgres" else "RabbitMQ"
        return f"{name} at {self.host}:{self.port}"

    @property
    def local(self) -> bool:
        return self.host in LOCAL_HOSTS


def endpoint(kind: str, url: str) -> Endpoint:
    """Parse a SQLAlchemy or AMQP URL into what the checks need."""
    parts = urlsplit(url)
    default_port = 5432 if kind == "postgres" else 5672
    default_user = "postgres" if kind == "postgres" else "guest"
    return Endpoint(
        kind=kind,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or default_port,
        user=unquote(parts.username or default_user),
        url=url,
    )


def greets(ep: Endpoint, timeout: float = 2.0) -> bool:
    """True when the server at the endpoint speaks its protocol (an SSLRequest or AMQP header answer)."""
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if ep.kind == "postgres":
                sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))  # SSLRequest
                return sock.recv(1) in {b"S", b"N"}
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # a method frame: connection.start
    except OSError:
        return False


async def _login(ep: Endpoint) -> str | None:
    """Log in for real; None on success, else a short reason."""
    try:
        if ep.kind == "postgres":
            import asyncpg

            base = ep.url.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)[0]
            conn = await asyncpg.connect(f"{base}/postgres", timeout=5)
            await conn.close()
        else:
            import aio_pika

            connection = await aio_pika.connect(ep.url, timeout=5)
            await connection.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def start_command(ep: Endpoint) -> list[str] | None:
    """How to start the server on this machine, or None when it is not installed here."""
    if not ep.local:
        return None
    if ep.kind == "postgres":
        ctl = shutil.which("pg_ctlcluster")
        conf = Path("/etc/postgresql")
        versions = sorted(p.name for p in conf.iterdir()) if conf.is_dir() else []
        if ctl and versions:
            return [ctl, "--skip-systemctl-redirect", versions[-1], "main", "start"]
        return None
    server = shutil.which("rabbitmq-server") or (
        "/usr/sbin/rabbitmq-server" if Path("/usr/sbin/rabbitmq-server").exists() else None
    )
    return [server, "-detached"] if server else None


def wait_until(ep: Endpoint, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if greets(ep):
            return True
        time.sleep(0.5)
    return False


def ensure(ep: Endpoint, *, start: bool = True, timeout: float = 90.0) -> tuple[bool, str]:
    """Bring one server up if we can; (ok, one-line message)."""
    if not greets(ep):
        command = start_command(ep) if start else None
        if command is None:
            return False, f"{ep.label} is not reachable and not installed here: {HOW_TO_GET}"
        print(f"{ep.label} is installed but stopped: starting it ({' '.join(command)})", flush=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0 and not greets(ep):
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            return False, f"could not start {ep.label} (exit {result.returncode}: {detail[0]})"
        if not wait_until(ep, timeout):
            return False, f"{ep.label} did not answer within {timeout:.0f} s after starting it"
    # A server that has just opened its port may still refuse logins for a moment.
    deadline = time.monotonic() + 30
    while True:
        reason = asyncio.run(_login(ep))
        if reason is None:
            return True, f"{ep.label} is up (user {ep.user})"
        if time.monotonic() > deadline:
            return False, f"{ep.label} answers but user {ep.user!r} cannot log in: {reason}"
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.infra", description=__doc__.splitlines()[0])
    parser.add_argument("--no-start", action="store_true", help="only check, never start a server")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait after starting a server")
    args = parser.parse_args(argv)
    endpoints = [
        endpoint("postgres", os.environ.get("CHAT_DATABASE_URL", DEFAULT_DATABASE_URL)),
        endpoint("rabbitmq", os.environ.get("CHAT_AMQP_URL", DEFAULT_AMQP_URL)),
    ]
    failed = False
    for ep in endpoints:
        ok, message = ensure(ep, start=not args.no_start, timeout=args.timeout)
        print(message if ok else f"ERROR: {message}", file=sys.stdout if ok else sys.stderr, flush=True)
        failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
