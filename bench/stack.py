"""The system under test: started here on loopback (own database, vhost, SMTP sink), or already running.

Local mode reuses the test support code: a fresh PostgreSQL database and
RabbitMQ vhost per run (removed afterwards) and the four services as real
processes. Settings that only protect against abuse (rate limits, flood cap)
are raised so the offered load is not refused; argon2 is cheapened because
account setup is not measured. Durability settings are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.procstat import PROC, pids_by_comm
from tests.support import infra
from tests.support.processes import ServiceProcess, service
from tests.support.smtp import free_port

SERVICES = ("auth", "store", "notifier", "gateway")
BENCH_ORIGIN = "http://localhost:3000"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StackConfig:
    grace_window_s: float = 2.0
    log_level: str = "WARNING"
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """Where the services are and how to find their processes and infrastructure."""

    gateway_url: str
    auth_url: str
    amqp_url: str
    vhost: str
    database_url: str  # SQLAlchemy form
    database: str
    origin: str = BENCH_ORIGIN
    amqp_prefix: str = "chat"
    env: dict[str, str] = field(default_factory=dict)  # what a CLI run against this stack needs
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    smtp_port: int | None = None
    grace_window_s: float | None = None
    _pg: asyncpg.Connection | None = None

    @property
    def ws_url(self) -> str:
        return self.gateway_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"

    def service_pids(self, name: str) -> list[int]:
        """The pid of a service started here, or those found by command line for a running stack."""
        proc = self.processes.get(name)
        if proc is not None and proc.proc is not None and proc.proc.poll() is None:
            return [proc.proc.pid]
        return pids_by_cmdline(f"services.{name}.main")

    async def _monitor(self) -> asyncpg.Connection:
        """One connection kept for the whole run: a busy server may refuse new ones mid-run."""
        if self._pg is None or self._pg.is_closed():
            for attempt in range(10):
                try:
                    self._pg = await asyncpg.connect(infra.admin_dsn(self.database))
                    break
                except asyncpg.TooManyConnectionsError:
                    if attempt == 9:
                        raise
                    await asyncio.sleep(0.5)
        assert self._pg is not None
        return self._pg

    async def postgres_backends(self) -> list[int]:
        """Backends connected to the bench database (the service pools), not this harness's own."""
        rows = await (await self._monitor()).fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        )
        return [int(r["pid"]) for r in rows]

    async def postgres_aux(self) -> list[int]:
        """WAL writer, checkpointer, background writer...: shared by every database on the server."""
        rows = await (await self._monitor()).fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"
        )
        return [int(r["pid"]) for r in rows]

    async def database_counters(self) -> dict[str, int]:
        """Cumulative transactions and row operations of the bench database (pg_stat_database).

        The statistics collector flushes about every 500 ms, so short windows are approximate."""
        row = await (await self._monitor()).fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched,"
            " blks_hit + blks_read AS blocks, sessions FROM pg_stat_database WHERE datname = $1",
            self.database,
        )
        return {k: int(v) for k, v in dict(row or {}).items()}

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
            self._pg = None

    @staticmethod
    def rabbitmq_pids() -> list[int]:
        return pids_by_comm("beam.smp")


def pids_by_cmdline(needle: str) -> list[int]:
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and "pytest" not in cmdline:
            found.append(int(entry.name))
    return found


def _database_name(url: str) -> str:
    match = re.search(r"/([^/?]+)(\?|$)", url.split("@", 1)[-1])
    return match.group(1) if match else "chat"


def _vhost(amqp_url: str) -> str:
    tail = amqp_url.split("@", 1)[-1]
    vhost = tail.split("/", 1)[1] if "/" in tail else ""
    vhost = vhost.split("?", 1)[0]
    return vhost.replace("%2F", "/").replace("%2f", "/") or "/"


def running_stack(
    *,
    gateway_url: str,
    auth_url: str,
    amqp_url: str,
    database_url: str,
    origin: str,
    grace_window_s: float | None,
) -> Stack:
    """A stack someone else started (``--url``); nothing is created or removed."""
    return Stack(
        gateway_url=gateway_url.rstrip("/"),
        auth_url=auth_url.rstrip("/"),
        amqp_url=amqp_url,
        vhost=_vhost(amqp_url),
        database_url=database_url,
        database=_database_name(database_url),
        origin=origin,
        env={"CHAT_DATABASE_URL": database_url, "CHAT_AMQP_URL": amqp_url},
        grace_window_s=grace_window_s,
    )


class LocalStack:
    """Create the database and vhost, start the services, and remove everything on exit."""

    def __init__(self, config: StackConfig, smtp_port: int | None) -> None:
        self.config = config
        self.run_id = infra.run_id()
        self.name = f"chat_bench_{self.run_id}"
        self.smtp_port = smtp_port
        self._keys = tempfile.TemporaryDirectory(prefix="bench-keys-")
        self._created_db = False
        self._created_vhost = False
        self.stack: Stack | None = None

    def _env(self, database_url: str, amqp_url: str, auth_port: int) -> dict[str, str]:
        env = {
            "CHAT_ENVIRONMENT": "development",
            "CHAT_DATABASE_URL": database_url,
            "CHAT_AMQP_URL": amqp_url,
            "CHAT_LOG_LEVEL": self.config.log_level,
            "CHAT_ALLOWED_ORIGINS": BENCH_ORIGIN,
            "CHAT_JWKS_URL": f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
            "AUTH_KEYS_DIR": self._keys.name,
            # Account setup is not what we measure: cheap hashes, no abuse limits.
            "AUTH_ARGON2_TIME_COST": "1",
            "AUTH_ARGON2_MEMORY_KIB": "8192",
            "AUTH_RATE_LIMIT_ENABLED": "false",
            "AUTH_ACCESS_TOKEN_TTL_S": str(6 * 3600),
            # Abuse caps sized for the offered load (a capacity run sends >1 msg/s per conversation).
            "STORE_FLOOD_CAP_PER_MINUTE": "1000000",
            "NOTIFIER_GRACE_WINDOW_S": str(self.config.grace_window_s),
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(self.smtp_port or 1),
            # Never pick up a proxy for loopback calls.
            "NO_PROXY": "127.0.0.1,localhost",
        }
        env.update(gateway_rate_env())
        env.update(self.config.extra_env)
        return env

    async def __aenter__(self) -> Stack:
        await infra.create_database(self.name)
        self._created_db = True
        await asyncio.to_thread(infra.create_vhost, self.name)
        self._created_vhost = True
        database_url = infra.sqlalchemy_url(self.name)
        amqp_url = infra.amqp_url(self.name)
        from shared.migrations import upgrade_all

        await asyncio.to_thread(upgrade_all, database_url)
        auth_port = free_port()
        env = self._env(database_url, amqp_url, auth_port)
        procs: dict[str, ServiceProcess] = {}
        for name in SERVICES:
            procs[name] = service(name, env, port=auth_port if name == "auth" else None)
        self.stack = Stack(
            gateway_url=procs["gateway"].url,
            auth_url=procs["auth"].url,
            amqp_url=amqp_url,
            vhost=self.name,
            database_url=database_url,
            database=self.name,
            env=env,
            processes=procs,
            smtp_port=self.smtp_port,
            grace_window_s=self.config.grace_window_s,
        )
        try:
            for name in SERVICES:  # auth first: the others fetch its JWKS
                procs[name].start()
                await procs[name].wait_ready(timeout=60)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self.stack

    async def __aexit__(self, *exc: object) -> None:
        if self.stack is not None:
            with contextlib.suppress(Exception):
                await self.stack.close()
            for proc in reversed(list(self.stack.processes.values())):
                await asyncio.to_thread(proc.stop)
        if self._created_vhost:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(infra.delete_vhost, self.name)
        if self._created_db:
            with contextlib.suppress(Exception):
                await infra.drop_database(self.name)
        self._keys.cleanup()


def gateway_rate_env() -> dict[str, str]:
    """The gateway's per-connection token bucket, opened up: an administrator's one socket carries
    the sends of ~50 consultations, far above what the abuse limit (20/s) is sized for."""
    return {"GATEWAY_RATE_PER_S": "100000", "GATEWAY_RATE_BURST": "100000"}
