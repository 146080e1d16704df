"""WebSocket connections of the loader: the ``websockets`` client, compression off, no client pings.

The server pings; the client answers pongs itself. Every connection gets a
reader task (an unread connection would stop answering pings once its queue
filled), which hands each frame to a callback as raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.model import Account

FrameHandler = Callable[["Client", bytes, float], None]


@dataclass(eq=False)
class Client:
    """One connection of one account (a device)."""

    index: int
    account: Account
    ws: ClientConnection
    handler: FrameHandler | None = None
    last_seq: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    closed_code: int | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def transport(self) -> asyncio.Transport:
        transport: Any = self.ws.transport
        return transport  # type: ignore[no-any-return]

    def start_reading(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        ws = self.ws
        try:
            while True:
                raw = await ws.recv(decode=False)
                now = time.monotonic()
                self.frames += 1
                handler = self.handler
                if handler is not None:
                    handler(self, raw if isinstance(raw, bytes) else raw.encode(), now)
        except ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd is not None else 1006

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def open_connection(url: str, token: str, origin: str) -> ClientConnection:
    """A handshake with the token in the Authorization header and an allowed Origin."""
    return await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        proxy=None,
        ping_interval=None,
        max_size=1 << 20,
        max_queue=None,
        open_timeout=60,
        close_timeout=5,
        user_agent_header=None,
    )


@dataclass
class ConnectResult:
    clients: list[Client]
    handshake_s: list[float]
    failures: dict[str, int]
    elapsed_s: float


async def connect_many(
    url: str,
    accounts: Sequence[Account],
    origin: str,
    *,
    concurrency: int = 64,
    first_index: int = 0,
    handler: FrameHandler | None = None,
) -> ConnectResult:
    """Open one connection per entry of ``accounts`` with at most ``concurrency`` handshakes in flight."""
    clients: list[Client | None] = [None] * len(accounts)
    times: list[float] = []
    failures: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(accounts)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            account = accounts[i]
            t0 = time.monotonic()
            try:
                ws = await open_connection(url, account.token, origin)
            except Exception as exc:
                key = type(exc).__name__
                failures[key] = failures.get(key, 0) + 1
                continue
            times.append(time.monotonic() - t0)
            client = Client(first_index + i, account, ws, handler)
            client.start_reading()
            clients[i] = client

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(accounts))))))
    elapsed = time.monotonic() - start
    return ConnectResult([c for c in clients if c is not None], times, failures, elapsed)


async def close_all(clients: Sequence[Client], concurrency: int = 256) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with sem:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))
