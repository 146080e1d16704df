"""A WebSocket chat client that behaves as a careful real client: resume by seq, resend unacked.

Tests use it to prove the invariants while services, the broker or the
database go away and come back: every acked message is stored once, and each
participant sees every message once, in ``seq`` order, with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ORIGIN = "http://localhost:8000"


@dataclass
class ChatClient:
    url: str
    token: str
    seen: dict[str, int] = field(default_factory=dict)  # conversation -> highest seq seen
    received: list[dict[str, Any]] = field(default_factory=list)  # message.new frames, in arrival order
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_id -> ack
    errors: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)
    connections: int = 0
    _ws: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None
    _acked: dict[str, asyncio.Event] = field(default_factory=dict)

    async def connect(self, attempts: int = 200) -> None:
        """Connect (retrying while the gateway is down) and resume every known conversation."""
        for _ in range(attempts):
            try:
                self._ws = await connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    origin=ORIGIN,  # type: ignore[arg-type]
                    compression=None,
                    open_timeout=5,
                )
                break
            except (OSError, TimeoutError, ConnectionClosed, Exception):
                await asyncio.sleep(0.1)
        else:
            raise ConnectionError("gateway never came back")
        self.connections += 1
        hello = orjson.loads(await self._ws.recv())
        assert hello["type"] == "hello", hello
        resumed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(self._ws, resumed))
        await self._ws.send(orjson.dumps({"type": "resume", "conversations": self.seen}).decode())
        await asyncio.wait_for(resumed.wait(), 15)

    async def _read(self, ws: ClientConnection, resumed: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = orjson.loads(raw)
                kind = frame["type"]
                if kind == "message.new":
                    self.received.append(frame)
                    conv = frame["conversation_id"]
                    self.seen[conv] = max(self.seen.get(conv, 0), frame["seq"])
                elif kind == "ack" and "client_id" in frame:
                    self.acks[frame["client_id"]] = frame
                    self._acked.setdefault(frame["client_id"], asyncio.Event()).set()
                elif kind == "error":
                    self.errors.append(frame)
                elif kind == "reload":
                    self.reloads.append(frame["conversation_id"])
                elif kind == "resumed":
                    resumed.set()

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def send_reliably(
        self, conversation_id: str, body: str, *, client_id: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Send until acked, reconnecting and resending the same client_id as often as needed."""
        client_id = client_id or uuid.uuid4().hex
        acked = self._acked.setdefault(client_id, asyncio.Event())
        frame = orjson.dumps(
            {"type": "message.send", "conversation_id": conversation_id, "client_id": client_id, "body": body}
        ).decode()
        deadline = asyncio.get_running_loop().time() + timeout
        while not acked.is_set():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{client_id} never acked; errors={self.errors[-3:]}")
            if not self.connected:
                await self.connect()
            assert self._ws is not None
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frame)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), 2.0)
        return self.acks[client_id]

    async def stay_connected(self, stop: asyncio.Event) -> None:
        """Keep a receiving client connected (reconnect + resume) until ``stop`` is set."""
        while not stop.is_set():
            if not self.connected:
                with contextlib.suppress(Exception):
                    await self.connect()
            await asyncio.sleep(0.05)

    def seqs(self, conversation_id: str) -> list[int]:
        return [f["seq"] for f in self.received if f["conversation_id"] == conversation_id]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._reader
