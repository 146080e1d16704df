"""The connection's writer and limits, driven through a fake socket (no network)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson

from services.gateway.connection import CLOSE_RATE_LIMIT, CLOSE_TOO_SLOW, Connection, Item
from services.gateway.settings import GatewaySettings
from shared.security import Principal


class FakeSocket:
    def __init__(self, *, stuck: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.stuck = stuck

    async def send_text(self, data: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()  # a client that never reads
        self.sent.append(orjson.loads(data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


class FakeStore:
    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages = {"sync": {"messages": [], "reload": [], "not_found": []}, **pages}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, params: dict[str, Any], principal: Principal) -> dict[str, Any]:
        self.calls.append((method, params))
        result: dict[str, Any] = self.pages[method]
        return result


class FakeHub:
    def __init__(self, store: FakeStore | None = None, **settings: Any) -> None:
        self.settings = GatewaySettings(**settings)
        self.store = store or FakeStore({})
        self.tasks: list[asyncio.Task[Any]] = []
        self.dirty: list[str] = []

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def presence_changed(self, user: str) -> None:
        self.dirty.append(user)


def principal() -> Principal:
    return Principal(uuid.uuid4(), "USER", "jti", int(time.time()) + 600)


def message(cid: str, seq: int) -> str:
    return orjson.dumps({"type": "message.new", "conversation_id": cid, "seq": seq}).decode()


async def drain(conn: Connection) -> None:
    for _ in range(50):
        if not conn.queue:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)


async def test_a_client_that_stops_reading_is_closed_with_4009_and_memory_stays_bounded() -> None:
    ws = FakeSocket(stuck=True)
    hub = FakeHub(send_buffer_frames=5)
    conn = Connection(ws, principal(), hub)  # type: ignore[arg-type]
    conn.start()
    await conn.handle(b'{"type": "ping"}')
    for i in range(50):
        conn.push(Item(f"frame {i}"))
        assert len(conn.queue) <= 5
    await asyncio.gather(*hub.tasks)
    assert conn.closed and ws.closed_with == CLOSE_TOO_SLOW and not conn.queue
    await conn.stop()


async def test_writer_drops_duplicates_and_fills_a_gap_in_seq_order() -> None:
    cid = str(uuid.uuid4())
    store = FakeStore(
        {
            "message.history": {
                "messages": [{"conversation_id": cid, "seq": 3}, {"conversation_id": cid, "seq": 4}]
            }
        }
    )
    ws = FakeSocket()
    conn = Connection(ws, principal(), FakeHub(store))  # type: ignore[arg-type]
    conn.start()
    await conn.handle(orjson.dumps({"type": "resume", "conversations": {}}))
    for seq in (1, 2, 2, 5, 4, 6):  # 2 twice, 3 and 4 missing when 5 arrives
        conn.push(Item(message(cid, seq), cid, seq))
    await drain(conn)
    seqs = [f["seq"] for f in ws.sent if f["type"] == "message.new"]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert store.calls[-1] == (
        "message.history",
        {"conversation_id": cid, "after": 2, "before": 5, "limit": 100},
    )
    await conn.stop()


async def test_a_gap_beyond_the_replay_limit_tells_the_client_to_reload() -> None:
    cid = str(uuid.uuid4())
    ws = FakeSocket()
    conn = Connection(ws, principal(), FakeHub(replay_max=3))  # type: ignore[arg-type]
    conn.start()
    await conn.handle(orjson.dumps({"type": "resume", "conversations": {}}))
    conn.push(Item(message(cid, 1), cid, 1))
    conn.push(Item(message(cid, 9), cid, 9))
    await drain(conn)
    assert [f["type"] for f in ws.sent][-3:] == ["message.new", "reload", "message.new"]
    await conn.stop()


async def test_too_many_frames_answer_rate_limited_then_close() -> None:
    ws = FakeSocket()
    hub = FakeHub(rate_per_s=0.001, rate_burst=2, rate_violations_before_close=3)
    conn = Connection(ws, principal(), hub)  # type: ignore[arg-type]
    conn.start()
    for _ in range(4):
        await conn.handle(b'{"type": "activity"}')
    await drain(conn)
    assert [f["code"] for f in ws.sent if f["type"] == "error"] == ["rate_limited", "rate_limited"]
    await conn.handle(b'{"type": "activity"}')
    await asyncio.gather(*hub.tasks)
    assert ws.closed_with == CLOSE_RATE_LIMIT
    await conn.stop()


async def test_activity_after_idle_marks_the_user_active_again() -> None:
    hub = FakeHub()
    conn = Connection(FakeSocket(), principal(), hub)  # type: ignore[arg-type]
    conn.active = False
    await conn.handle(b'{"type": "activity"}')
    assert conn.active and hub.dirty == [conn.user]
