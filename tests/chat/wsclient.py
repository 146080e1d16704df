"""A small real WebSocket client for the end-to-end tests (the ``websockets`` library)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        base_url: str,
        token: str | None,
        *,
        origin: str | None = "http://localhost:3000",
        how: str = "header",
        resume: dict[str, int] | None = None,
    ) -> Client:
        url = base_url.replace("http://", "ws://") + "/ws"
        headers: dict[str, str] = {}
        subprotocols: list[str] = ["chat.v1"]
        if token and how == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif token and how == "subprotocol":
            subprotocols.append(f"bearer.{token}")
        elif token and how == "cookie":
            headers["Cookie"] = f"access_token={token}"
        ws = await connect(
            url,
            additional_headers=headers,
            origin=origin,  # type: ignore[arg-type]
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=None,
            open_timeout=10,
        )
        client = cls(ws)
        await client.wait_for(lambda f: f["type"] == "hello")
        await client.send({"type": "resume", "conversations": resume or {}})
        await client.wait_for(lambda f: f["type"] == "resumed")
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))
            self._changed.set()

    async def send(self, frame: Frame | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else orjson.dumps(frame).decode())

    async def wait_for(
        self, match: Callable[[Frame], bool], timeout: float = 10.0, count: int = 1
    ) -> list[Frame]:
        async def poll() -> list[Frame]:
            while True:
                found = [f for f in self.frames if match(f)]
                if len(found) >= count:
                    return found
                if self.closed.done():
                    raise AssertionError(
                        f"closed {self.closed.result()} while waiting; frames={self.frames[-5:]}"
                    )
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(poll(), timeout)

    async def request(self, frame: Frame, timeout: float = 10.0) -> Frame:
        """Send a frame with a fresh ``ref`` and wait for its ack or error."""
        ref = uuid.uuid4().hex[:8]
        await self.send({**frame, "ref": ref})
        found = await self.wait_for(
            lambda f: f.get("ref") == ref and f["type"] in ("ack", "error", "pong"), timeout
        )
        return found[0]

    def of_type(self, frame_type: str, **fields: Any) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f["type"] == frame_type and all(f.get(k) == v for k, v in fields.items())
        ]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        transport = self.ws.transport
        transport.abort()
