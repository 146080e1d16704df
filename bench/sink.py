"""Drive the SMTP sink process from the harness: start it, collect arrivals, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

import orjson

from tests.support.smtp import free_port


@dataclass
class Mail:
    t: float  # CLOCK_MONOTONIC arrival
    rcpt: list[str]
    message_id: str | None
    subject: str | None


@dataclass
class SinkProcess:
    port: int = field(default_factory=free_port)
    mails: list[Mail] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.smtpsink",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        if line.strip() != b"ready":
            raise RuntimeError(f"SMTP sink did not start: {line!r}")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            d = orjson.loads(line)
            self.mails.append(Mail(d["t"], d["rcpt"], d.get("message_id"), d.get("subject")))

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
