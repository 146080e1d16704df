"""A minimal stand-in for the gateway's frame protocol, to test the load generator's own logic.

Only for the harness unit tests: the smoke test drives the real services.
Token = the user id; ``message.send`` gets an ``ack`` and every connection of
both participants gets ``message.new`` with the next seq.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve


@dataclass
class FakeGateway:
    conversations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (user, admin)
    connections: dict[str, set[ServerConnection]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    server: Server | None = None
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        user = ws.request.headers["Authorization"].removeprefix("Bearer ")
        self.connections.setdefault(user, set()).add(ws)
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                conv = frame["conversation_id"]
                seq = self.seqs[conv] = self.seqs.get(conv, 0) + 1
                message = {
                    "message_id": str(uuid.UUID(int=next(self._ids))),
                    "conversation_id": conv,
                    "seq": seq,
                    "sender_id": user,
                    "client_id": frame["client_id"],
                    "body": frame["body"],
                }
                await ws.send(orjson.dumps({"type": "ack", **message}).decode())
                out = orjson.dumps({"type": "message.new", **message}).decode()
                for participant in self.conversations[conv]:
                    for conn in self.connections.get(participant, ()):
                        await conn.send(out)
        finally:
            self.connections[user].discard(ws)
