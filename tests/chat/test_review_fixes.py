"""Regressions found in review: a failing dependency must give an error frame / problem, not a dead
socket or a 500; an instance swept as dead while alive writes its presence again."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from services.gateway.adapters.presence_repo import PresenceRepository
from services.gateway.connection import CLOSE_INTERNAL, PEERS_TTL_S, Connection
from services.gateway.entrypoints import http
from services.gateway.hub import Hub
from services.gateway.settings import GatewaySettings
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from shared.problems import install_problem_handlers
from shared.security import TokenVerifier
from tests.chat.test_connection import FakeHub, FakeSocket, FakeStore, drain, principal
from tests.support.proxy import CuttableProxy
from tests.support.tokens import TestIssuer


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


class BrokenBrokerHub(FakeHub):
    async def publish_typing(self, conversation_id: str, sender: str, to: list[str]) -> None:
        raise ConnectionError("broker connection lost")


async def test_typing_while_the_broker_is_down_answers_an_error_frame_and_the_socket_stays_usable() -> None:
    me = principal()
    conv = str(uuid.uuid4())
    store = FakeStore({"conversation.get": {"user_id": str(me.user_id), "admin_id": str(uuid.uuid4())}})
    hub = BrokenBrokerHub(store)
    ws = FakeSocket()
    conn = Connection(ws, me, hub)  # type: ignore[arg-type]
    conn.start()
    await conn.handle(f'{{"type": "typing", "conversation_id": "{conv}", "ref": "t1"}}')
    await conn.handle(b'{"type": "ping", "ref": "p1"}')
    await drain(conn)
    assert [(f["type"], f.get("code"), f["ref"]) for f in ws.sent] == [
        ("error", "unavailable", "t1"),
        ("pong", None, "p1"),
    ]
    assert not conn.closed and ws.closed_with is None
    await conn.stop()


async def test_auth_refresh_while_auth_is_unreachable_answers_unavailable_not_a_dead_socket() -> None:
    known, stranger = TestIssuer(), TestIssuer()
    hub = FakeHub()
    hub.verifier = TokenVerifier(  # type: ignore[attr-defined]
        closed_port_url(), issuer=known.issuer, audience=known.audience, min_refresh_s=0.0
    )
    hub.verifier.set_jwks(known.jwks())  # type: ignore[attr-defined]
    ws = FakeSocket()
    me = principal()
    conn = Connection(ws, me, hub)  # type: ignore[arg-type]
    conn.start()
    token = stranger.mint(me.user_id)  # a kid this gateway has not seen: needs a JWKS fetch
    await conn.handle(f'{{"type": "auth.refresh", "token": "{token}", "ref": "r1"}}')
    await drain(conn)
    assert [(f["type"], f.get("code")) for f in ws.sent] == [("error", "unavailable")]
    assert not conn.closed
    await conn.stop()


async def test_rest_answers_503_problem_when_tokens_cannot_be_verified() -> None:
    issuer = TestIssuer()
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(http.router)
    app.state.hub = SimpleNamespace(
        settings=GatewaySettings(),
        verifier=TokenVerifier(closed_port_url(), issuer=issuer.issuer, audience=issuer.audience),
        store=None,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.get(
            "/api/conversations", headers={"Authorization": f"Bearer {issuer.mint(uuid.uuid4())}"}
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"


class _Conn:
    """What the hub's sweep and presence writer read of a connection."""

    def __init__(self) -> None:
        self.active = True
        self.last_activity = time.monotonic()
        self.principal = SimpleNamespace(expires_at=time.time() + 600)


async def _state(engine: AsyncEngine, user: uuid.UUID) -> str | None:
    async with engine.connect() as conn:
        value = (
            await conn.execute(text("SELECT state FROM gateway.presence WHERE user_id = :u"), {"u": user})
        ).scalar()
    return None if value is None else str(value)


async def _wait_for_state(engine: AsyncEngine, user: uuid.UUID, state: str, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while await _state(engine, user) != state:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_an_instance_swept_as_dead_while_alive_writes_its_users_presence_again(
    engine: AsyncEngine,
) -> None:
    settings = GatewaySettings(heartbeat_s=0.1, sweep_interval_s=0.05, instance_ttl_s=10.0)
    instance = f"rv{uuid.uuid4().hex[:10]}"
    repo = PresenceRepository(engine, instance_id=instance, ttl_s=10.0, events_exchange="t.events")
    broker: Any = SimpleNamespace(topology=Topology(prefix="t"))
    hub = Hub(
        settings,
        broker=broker,
        store=None,  # type: ignore[arg-type]
        verifier=None,  # type: ignore[arg-type]
        presence=repo,
        instance_id=instance,
    )
    user = uuid.uuid4()
    hub.users[str(user)] = {_Conn()}  # type: ignore[arg-type]
    await repo.heartbeat()
    hub.spawn(hub._presence_writer())
    housekeeping = asyncio.get_running_loop().create_task(hub._housekeeping())
    try:
        hub.presence_changed(str(user))
        await _wait_for_state(engine, user, "active")

        # The instance stalls longer than the TTL (a long pause, a database outage) and a peer sweeps it.
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE gateway.instances SET heartbeat_at = now() - interval '1 hour'"
                    " WHERE instance_id = :i"
                ),
                {"i": instance},
            )
        peer = PresenceRepository(engine, instance_id="rv-peer", ttl_s=10.0, events_exchange="t.events")
        assert await peer.sweep_dead_instances() >= 1
        assert await _state(engine, user) == "offline"

        # It comes back: its user is still connected here, so it must count again.
        housekeeping = asyncio.get_running_loop().create_task(hub._housekeeping())
        await _wait_for_state(engine, user, "active")
    finally:
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        hub.users.clear()
        await hub.stop()


class _Presence:
    """Presence is not under test here."""

    async def heartbeat(self) -> bool:
        return False

    async def write_shares(self, shares: list[Any]) -> int:
        return 0

    async def sweep_dead_instances(self) -> int:
        return 0

    async def leave(self) -> None:
        return None


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_after_a_broker_reconnect_each_connection_fetches_what_it_missed(amqp_url: str) -> None:
    """Deliveries published while the gateway's transient queue was gone are lost in the broker;
    a message that was acked meanwhile must still reach the connected participant."""
    target = URL(amqp_url)
    proxy = CuttableProxy(target.host or "127.0.0.1", target.port or 5672)
    await proxy.start()
    broker = Broker(
        str(target.with_host("127.0.0.1").with_port(proxy.port)),
        Topology(prefix=f"rv{uuid.uuid4().hex[:6]}"),
        service="gateway-review-test",
        heartbeat_s=2,
    )
    await broker.start()
    me = principal()
    conv = str(uuid.uuid4())
    store = FakeStore({})
    hub = Hub(
        GatewaySettings(resume_wait_s=0.1),
        broker=broker,
        store=store,  # type: ignore[arg-type]
        verifier=None,  # type: ignore[arg-type]
        presence=_Presence(),  # type: ignore[arg-type]
        instance_id=uuid.uuid4().hex[:12],
    )
    await hub.start()
    ws = FakeSocket()
    conn = Connection(ws, me, hub)
    try:
        await hub.attach(conn)
        conn.start()
        await conn.handle(f'{{"type": "resume", "conversations": {{"{conv}": 1}}}}')
        await _until(lambda: [f["type"] for f in ws.sent] == ["resumed"])

        # The connection to the broker drops; seq 2 is committed and published meanwhile (lost).
        missed = {
            "message_id": str(uuid.uuid4()),
            "conversation_id": conv,
            "seq": 2,
            "sender_id": str(uuid.uuid4()),
            "client_id": "c2",
            "body": "sent while the gateway was away",
            "created_at": "2026-01-01T00:00:00Z",
        }
        store.pages["sync"] = {"messages": [missed], "reload": [], "not_found": []}
        await proxy.cut()
        await asyncio.sleep(0.5)
        await proxy.restore()

        await _until(lambda: any(f["type"] == "message.new" for f in ws.sent))
        news = [f for f in ws.sent if f["type"] == "message.new"]
        assert [(f["conversation_id"], f["seq"]) for f in news] == [(conv, 2)]
        assert [f["type"] for f in ws.sent].count("resumed") == 1  # the resync is silent
        assert [params for method, params in store.calls if method == "sync"][-1]["conversations"] == {
            conv: 1
        }
    finally:
        await hub.detach(conn)
        await conn.stop()
        await hub.stop()
        await broker.close()
        await proxy.stop()


class TypingHub(FakeHub):
    def __init__(self, store: FakeStore) -> None:
        super().__init__(store)
        self.typing_to: list[list[str]] = []

    async def publish_typing(self, conversation_id: str, sender: str, to: list[str]) -> None:
        self.typing_to.append(to)


async def test_typing_follows_a_reassignment_instead_of_reaching_the_former_admin_forever() -> None:
    me = principal()
    conv = str(uuid.uuid4())
    old_admin, new_admin = str(uuid.uuid4()), str(uuid.uuid4())
    store = FakeStore({"conversation.get": {"user_id": str(me.user_id), "admin_id": old_admin}})
    hub = TypingHub(store)
    conn = Connection(FakeSocket(), me, hub)  # type: ignore[arg-type]
    await conn._typing(conv, 100.0)
    store.pages["conversation.get"] = {"user_id": str(me.user_id), "admin_id": new_admin}
    await conn._typing(conv, 101.0)  # cached: one lookup per burst of typing, not one per frame
    await conn._typing(conv, 100.0 + PEERS_TTL_S)
    assert hub.typing_to == [[old_admin], [old_admin], [new_admin]]
    assert [method for method, _ in store.calls] == ["conversation.get", "conversation.get"]


async def test_a_failed_replay_closes_the_socket_instead_of_leaving_it_silently_deaf() -> None:
    store = FakeStore({"sync": {"messages": []}})  # a reply the writer cannot use
    ws = FakeSocket()
    conn = Connection(ws, principal(), FakeHub(store))  # type: ignore[arg-type]
    conn.start()
    await conn.handle(f'{{"type": "resume", "conversations": {{"{uuid.uuid4()}": 1}}}}')
    await drain(conn)
    await asyncio.sleep(0.05)
    assert conn.closed and ws.closed_with == CLOSE_INTERNAL
