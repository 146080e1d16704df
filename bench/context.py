"""Run-wide state: the stack, the results writer, measurement helpers and the cached population."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from bench import api
from bench.brokerstats import depths_dict, queue_depths, total_backlog
from bench.config import BenchConfig
from bench.model import Account, Conversation
from bench.procstat import Meter, Window, sample
from bench.report import ResultWriter
from bench.sink import SinkProcess
from bench.stack import SERVICES, Stack

# Messages left in the broker queues that count as drained (presence refreshes trickle in).
SETTLED_BACKLOG = 20


@dataclass
class Population:
    admins: list[Account]
    users: list[Account]
    conversations: list[Conversation]


@dataclass
class Context:
    stack: Stack
    cfg: BenchConfig
    writer: ResultWriter
    api: api.Api
    tag: str
    sink: SinkProcess | None = None
    rng: random.Random = field(default_factory=random.Random)
    _chat: Population | None = None
    _accounts: tuple[list[Account], list[Account]] | None = None
    _admins: list[Account] | None = None
    _db0: dict[str, int] = field(default_factory=dict)
    _db_delta: dict[str, int] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"[bench] {message}", flush=True)

    # --- measurement ---------------------------------------------------------------

    async def roles(self) -> dict[str, list[int]]:
        roles: dict[str, list[int]] = {name: self.stack.service_pids(name) for name in SERVICES}
        roles["postgres"] = await self.stack.postgres_backends()
        roles["postgres-aux"] = await self.stack.postgres_aux()
        roles["rabbitmq"] = self.stack.rabbitmq_pids()
        roles["loader"] = [os.getpid()]
        if self.sink is not None and self.sink.pid is not None:
            roles["smtp-sink"] = [self.sink.pid]
        return roles

    async def start_window(self) -> Meter:
        meter = Meter()
        self._db0 = await self.stack.database_counters()
        meter.start(await self.roles())
        return meter

    async def stop_window(self, meter: Meter) -> Window:
        window = meter.stop(await self.roles())
        db1 = await self.stack.database_counters()
        self._db_delta = {k: v - self._db0.get(k, 0) for k, v in db1.items()}
        return window

    def window_record(self, window: Window, messages: int | None) -> dict[str, Any]:
        loader = window.groups.get("loader")
        cores = loader.cpu_ms / 1000.0 / window.wall_s if loader and window.wall_s else 0.0
        database: dict[str, Any] = {"delta": dict(self._db_delta)}
        if messages:
            database["per_msg"] = {k: round(v / messages, 2) for k, v in self._db_delta.items()}
        return {
            "database": database,
            "window": window.as_dict(messages),
            "loader_cpu_cores": round(cores, 3),
            # Ticks are 10 ms: a flag needs a few of them, or a 30 ms window would flag on one tick.
            "loader_flagged": cores > self.cfg.loader_cpu_limit_cores
            and (loader.cpu_ms if loader else 0) >= 50,
        }

    async def queues(self) -> dict[str, Any]:
        depths = await queue_depths(self.stack.vhost)
        dead_name = f"{self.stack.amqp_prefix}.dead"
        live = [d for d in depths if d.name != dead_name]
        dead = sum(d.messages for d in depths if d.name == dead_name)
        # The backlog is what is still to be processed; dead letters never drain by themselves.
        return {"backlog": total_backlog(live), "dead_letters": dead, "queues": depths_dict(depths)}

    async def settle_queues(self, deadline: float) -> None:
        """Wait (until the ``time.monotonic()`` deadline) for the broker backlog to drain, so a
        measurement never shares the machine with the work its setup left behind."""
        while time.monotonic() < deadline:
            if (await self.queues())["backlog"] <= SETTLED_BACKLOG:
                return
            await asyncio.sleep(0.5)

    def gateway_rss_kb(self) -> int:
        return sum(s.rss_kb for p in self.stack.service_pids("gateway") if (s := sample(p)) is not None)

    # --- population -----------------------------------------------------------------

    async def admins(self) -> list[Account]:
        """The administrators (with tokens), made once per run."""
        if self._admins is None:
            self.log(f"creating {self.cfg.chat.admins} administrators")
            self._admins = await api.make_admins(self.api, self.tag, self.cfg.chat.admins)
        return self._admins

    async def accounts(self) -> tuple[list[Account], list[Account]]:
        """Administrators and users with tokens, made once per run."""
        if self._accounts is None:
            admins = await self.admins()
            self.log(f"creating {self.cfg.chat.users} users")
            users = await api.make_users(self.api, self.tag, self.cfg.chat.users)
            self._accounts = (admins, users)
        return self._accounts

    async def chat_population(self) -> Population:
        """The accounts plus one consultation per user, made once per run."""
        if self._chat is None:
            admins, users = await self.accounts()
            self.log("opening one consultation per user")
            convs = await api.open_conversations(self.api, users, admins, self.tag)
            if not convs:
                raise api.SetupError("no consultation was assigned to a bench administrator")
            self._chat = Population(admins, users, convs)
        return self._chat
