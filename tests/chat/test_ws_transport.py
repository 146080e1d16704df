"""The /ws protocol (``entrypoints.ws``): handshake rules, frame order, flow control, keepalive, teardown.

Most tests drive ``GatewayWebSocket`` in process: a real ``websockets`` client protocol (sans-I/O) talks to
it through a recording transport, with a small stand-in for the hub. The last ones start a real gateway
process to prove the protocol is what uvicorn serves.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from services.gateway.entrypoints.ws import GatewayWebSocket, WsContext
from services.gateway.entrypoints.ws_handshake import FORBIDDEN, NOT_FOUND, Upgrade, check_upgrade, header_map
from services.gateway.entrypoints.ws_keepalive import Action, keepalive_action
from services.gateway.settings import GatewaySettings
from shared.security import InvalidToken, KeysUnavailable, Principal
from tests.chat.stack import ORIGIN, base_env
from tests.support.processes import ServiceProcess, service
from tests.support.tokens import TestIssuer

ALLOWED = frozenset({ORIGIN})


# --- handshake rules (no network) ----------------------------------------------------


def upgrade(path: str = "/ws", **headers: str) -> Upgrade | int:
    return check_upgrade(
        path,
        {"origin": ORIGIN, **headers},
        ALLOWED,
        cookie_name="access_token",
        subprotocol="chat.v1",
    )


def test_a_foreign_origin_is_refused_before_anything_else() -> None:
    assert upgrade(origin="https://evil.example") == FORBIDDEN
    assert upgrade("/elsewhere", origin="https://evil.example") == FORBIDDEN


def test_only_the_ws_path_upgrades() -> None:
    assert upgrade("/elsewhere") == NOT_FOUND
    assert upgrade("/ws/") == NOT_FOUND
    assert isinstance(upgrade("/ws?x=1"), Upgrade)


def test_the_token_comes_from_header_then_subprotocol_then_cookie_and_only_our_protocol_is_echoed() -> None:
    assert upgrade(authorization="Bearer a") == Upgrade("a", None)
    assert upgrade(**{"sec-websocket-protocol": "chat.v1, bearer.b"}) == Upgrade("b", "chat.v1")
    assert upgrade(cookie="x=1; access_token=c") == Upgrade("c", None)
    assert upgrade() == Upgrade(None, None)
    assert check_upgrade("/ws", {}, ALLOWED, cookie_name="t", subprotocol="chat.v1") == Upgrade(None, None)


def test_repeated_list_headers_are_joined_and_others_keep_their_first_value() -> None:
    headers = header_map(
        [
            ("Sec-WebSocket-Protocol", "chat.v1"),
            ("sec-websocket-protocol", "bearer.t"),
            ("Cookie", "a=1"),
            ("Cookie", "access_token=c"),
            ("Authorization", "Bearer first"),
            ("Authorization", "Bearer second"),
        ]
    )
    assert headers == {
        "sec-websocket-protocol": "chat.v1, bearer.t",
        "cookie": "a=1; access_token=c",
        "authorization": "Bearer first",
    }


def test_keepalive_pings_a_quiet_socket_and_expires_an_unanswered_ping() -> None:
    assert keepalive_action(10.0, 5.0, 0.0, interval=5, timeout=3) is Action.PING
    assert keepalive_action(10.0, 6.0, 0.0, interval=5, timeout=3) is Action.NONE
    assert keepalive_action(12.0, 5.0, 10.0, interval=5, timeout=3) is Action.NONE
    assert keepalive_action(13.0, 5.0, 10.0, interval=5, timeout=3) is Action.EXPIRE


# --- the protocol in process ---------------------------------------------------------------


class Wire:
    """The transport side: records what the server writes and how it closes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Verifier:
    """Answers like ``TokenVerifier``: ``ok-<delay>`` verifies after that many ms, others raise."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.gate: asyncio.Event | None = None

    async def verify(self, token: str) -> Principal:
        if self.gate is not None:
            await self.gate.wait()
        if token == "keys-down":
            raise KeysUnavailable("jwks unreachable")
        if not token.startswith("ok"):
            raise InvalidToken("bad signature")
        await asyncio.sleep(int(token.partition("-")[2] or 0) / 1000)
        return self.principal


class Hub:
    def __init__(self, **settings: Any) -> None:
        self.settings = GatewaySettings(**settings)
        self.principal = Principal(uuid.uuid4(), "USER", "jti", int(time.time()) + 600)
        self.verifier = Verifier(self.principal)
        self.attached: list[Any] = []
        self.detached: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.attach_fails = False

    async def attach(self, conn: Any) -> None:
        self.attached.append(conn)
        if self.attach_fails:
            raise ConnectionError("broker unreachable")

    async def detach(self, conn: Any) -> None:
        self.detached.append(conn)

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def presence_changed(self, user: str) -> None:
        pass


class Peer:
    """A client (sans-I/O ``websockets``) wired to one server socket."""

    def __init__(
        self,
        hub: Hub,
        path: str = "/ws",
        *,
        origin: str = ORIGIN,
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.hub = hub
        self.ctx = WsContext(hub, [ORIGIN + "/"])  # type: ignore[arg-type]
        config = SimpleNamespace(loaded=True, loaded_app=SimpleNamespace(state=SimpleNamespace(ws=self.ctx)))
        self.server_state = SimpleNamespace(connections=set(), tasks=set())
        self.sock = GatewayWebSocket(config=config, server_state=self.server_state, app_state={})
        self.wire = Wire()
        self.sock.connection_made(self.wire)  # type: ignore[arg-type]
        self.client = ClientProtocol(
            parse_uri(f"ws://gw{path}"),
            origin=origin,  # type: ignore[arg-type]
            subprotocols=subprotocols,  # type: ignore[arg-type]
        )
        request = self.client.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.client.send_request(request)
        self.response: Response | None = None
        self.frames: list[Frame] = []
        self.push()

    def push(self) -> None:
        """Deliver what the client has to send to the server."""
        data = b"".join(self.client.data_to_send())
        if data:
            self.sock.data_received(data)

    def pull(self) -> None:
        """Deliver what the server wrote to the client; the client's automatic answers go back."""
        if self.wire.out:
            data, self.wire.out = bytes(self.wire.out), bytearray()
            self.client.receive_data(data)
        for event in self.client.events_received():
            if isinstance(event, Response):
                self.response = event
            elif isinstance(event, Frame):
                self.frames.append(event)

    def texts(self) -> list[dict[str, Any]]:
        self.pull()
        return [orjson.loads(f.data) for f in self.frames if f.opcode is Opcode.TEXT]

    def close_frame(self) -> Close | None:
        self.pull()
        return next((Close.parse(f.data) for f in self.frames if f.opcode is Opcode.CLOSE), None)

    def send(self, frame: dict[str, Any]) -> None:
        self.client.send_text(orjson.dumps(frame))
        self.push()

    async def until(self, predicate: Any, what: str) -> None:
        for _ in range(500):
            self.pull()
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never happened: {what}")

    async def settle(self) -> None:
        """Let the socket's tasks finish (handshake, frames, teardown)."""
        for _ in range(500):
            if not self.server_state.tasks:
                break
            await asyncio.sleep(0.01)
        self.pull()


async def opened(hub: Hub) -> Peer:
    peer = Peer(hub, subprotocols=["chat.v1"], headers={"Authorization": "Bearer ok"})
    await peer.until(lambda: any(t["type"] == "hello" for t in peer.texts()), "hello")
    return peer


async def test_an_accepted_socket_echoes_our_subprotocol_says_hello_and_joins_the_hub() -> None:
    hub = Hub()
    peer = await opened(hub)
    assert peer.response is not None and peer.response.status_code == 101
    assert peer.response.headers["Sec-WebSocket-Protocol"] == "chat.v1"
    hello = peer.texts()[0]
    assert hello["user_id"] == str(hub.principal.user_id)
    assert hello["limits"]["max_frame_bytes"] == hub.settings.max_frame_bytes
    assert len(hub.attached) == 1 and peer.sock in peer.ctx.keepalive.sockets
    await peer.settle()
    assert peer.sock._task is None  # an idle connection holds no task


@pytest.mark.parametrize(
    ("token", "code", "reason"),
    [
        (None, 4001, "missing access token"),
        ("forged", 4001, "invalid access token"),
        ("keys-down", 1013, "cannot verify tokens right now"),
    ],
)
async def test_a_bad_or_unverifiable_token_is_accepted_then_closed_with_a_code(
    token: str | None, code: int, reason: str
) -> None:
    hub = Hub()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    peer = Peer(hub, headers=headers)
    await peer.until(lambda: peer.close_frame() is not None, "close frame")
    assert peer.response is not None and peer.response.status_code == 101
    assert peer.close_frame() == Close(code, reason)
    assert not hub.attached and not peer.texts()


async def test_a_foreign_origin_gets_403_and_another_path_404_without_verifying() -> None:
    hub = Hub()
    hub.verifier.gate = asyncio.Event()  # a verification would hang
    for peer, status in ((Peer(hub, origin="https://evil.example"), 403), (Peer(hub, "/nope"), 404)):
        peer.pull()
        assert peer.response is not None and peer.response.status_code == status
        assert peer.wire.closing and not peer.server_state.tasks


async def test_frames_of_one_socket_are_handled_strictly_in_arrival_order() -> None:
    hub = Hub()
    peer = await opened(hub)
    # Each refresh awaits the verifier; earlier ones take longer, so handling them at once would reorder.
    for i, delay in enumerate((40, 30, 20, 10, 0)):
        peer.send({"type": "auth.refresh", "token": f"ok-{delay}", "ref": f"r{i}"})
    assert len(peer.server_state.tasks) == 1  # one task for the waiting frames
    await peer.until(lambda: len([t for t in peer.texts() if t["type"] == "auth.refreshed"]) == 5, "acks")
    assert [t["ref"] for t in peer.texts() if t["type"] == "auth.refreshed"] == [f"r{i}" for i in range(5)]
    await peer.settle()
    assert peer.sock._task is None and peer.wire.reading


async def test_a_fragmented_message_is_reassembled_before_it_is_handled() -> None:
    peer = await opened(Hub())
    peer.client.send_text(b'{"type": "ping", ', fin=False)
    peer.client.send_continuation(b'"ref": "frag"}', fin=True)
    peer.push()
    await peer.until(lambda: any(t["type"] == "pong" for t in peer.texts()), "pong")
    assert [t.get("ref") for t in peer.texts() if t["type"] == "pong"] == ["frag"]


async def test_a_client_that_floods_frames_is_read_no_faster_than_they_are_handled() -> None:
    hub = Hub()
    peer = await opened(hub)
    for i in range(20):
        peer.send({"type": "auth.refresh", "token": "ok-5", "ref": f"r{i}"})
    assert not peer.wire.reading  # TCP pushes back on the client
    await peer.until(lambda: len([t for t in peer.texts() if t["type"] == "auth.refreshed"]) == 20, "acks")
    await peer.settle()
    assert peer.wire.reading


async def test_sending_waits_while_the_transport_is_paused_and_continues_on_resume() -> None:
    peer = await opened(Hub())
    peer.sock.pause_writing()
    sending = asyncio.get_running_loop().create_task(peer.sock.send_text('{"type": "x"}'))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not sending.done() and not peer.wire.out
    peer.sock.resume_writing()
    await sending
    assert peer.texts()[-1] == {"type": "x"}


async def test_a_sender_waiting_on_a_paused_transport_fails_when_the_socket_is_lost() -> None:
    hub = Hub()
    peer = await opened(hub)
    peer.sock.pause_writing()
    sending = asyncio.get_running_loop().create_task(peer.sock.send_text("never"))
    await asyncio.sleep(0)
    peer.sock.connection_lost(None)
    with pytest.raises(ConnectionError):
        await sending
    await peer.settle()
    assert hub.detached == hub.attached and hub.attached[0].closed
    assert peer.sock not in peer.ctx.keepalive.sockets and not peer.server_state.connections


async def test_a_close_from_the_server_still_goes_out_past_a_full_buffer() -> None:
    hub = Hub()
    peer = await opened(hub)
    peer.sock.pause_writing()
    await asyncio.wait_for(peer.sock.close(4009, "too slow: send buffer full"), 1)
    assert peer.close_frame() == Close(4009, "too slow: send buffer full")
    await peer.settle()
    assert hub.detached == hub.attached  # left the hub without waiting for the client's answer


async def test_the_keepalive_sweep_pings_a_quiet_socket_and_closes_it_when_no_answer_comes() -> None:
    hub = Hub(ws_ping_interval_s=5, ws_ping_timeout_s=3)
    answering, silent = await opened(hub), await opened(hub)
    keepalive = answering.ctx.keepalive
    silent.ctx.keepalive = keepalive  # one sweep for both, as in a process
    keepalive.watch(silent.sock)
    start = max(answering.sock.last_seen, silent.sock.last_seen)
    keepalive.sweep(start + 5)
    for peer in (answering, silent):
        peer.pull()
        assert peer.frames[-1].opcode is Opcode.PING
    answering.push()  # the client protocol answered the ping with a pong
    keepalive.sweep(start + 8.5)
    assert answering.close_frame() is None and not answering.wire.closing
    assert silent.close_frame() == Close(1011, "keepalive ping timeout") and silent.wire.closing
    await silent.settle()
    assert hub.detached == [hub.attached[1]]


async def test_a_close_from_the_client_is_echoed_and_the_connection_leaves_the_hub() -> None:
    hub = Hub()
    peer = await opened(hub)
    peer.client.send_close(1000, "bye")
    peer.push()
    assert peer.close_frame() == Close(1000, "bye") and peer.wire.closing
    await peer.settle()
    assert hub.detached == hub.attached and hub.attached[0].closed


async def test_a_client_gone_during_verification_never_joins_the_hub() -> None:
    hub = Hub()
    hub.verifier.gate = asyncio.Event()
    peer = Peer(hub, headers={"Authorization": "Bearer ok"})
    peer.sock.connection_lost(None)
    hub.verifier.gate.set()
    await peer.settle()
    assert not hub.attached and not peer.wire.out


async def test_a_socket_that_cannot_join_the_hub_is_closed_with_1011_not_left_silent() -> None:
    hub = Hub()
    hub.attach_fails = True
    peer = Peer(hub, headers={"Authorization": "Bearer ok"})
    await peer.until(lambda: peer.close_frame() is not None, "close frame")
    assert peer.close_frame() == Close(1011, "could not join this gateway") and not peer.texts()
    await peer.settle()
    assert hub.detached == hub.attached


async def test_server_shutdown_closes_open_sockets_with_1012() -> None:
    hub = Hub()
    peer = await opened(hub)
    peer.sock.shutdown()
    assert peer.close_frame() == Close(1012, "") and peer.wire.closing
    await peer.settle()
    assert hub.detached == hub.attached


# --- under uvicorn, in a real gateway process ------------------------------------------------


@pytest.fixture(scope="module")
async def gateway(common_env: dict[str, str], issuer: TestIssuer) -> AsyncIterator[ServiceProcess]:
    env = {
        **base_env(common_env, issuer.jwks_url),
        "GATEWAY_WS_PING_INTERVAL_S": "0.2",
        "GATEWAY_WS_PING_TIMEOUT_S": "2",
    }
    proc = service("gateway", env)
    proc.start()
    try:
        await proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def raw_exchange(url: str, path: str, headers: dict[str, str]) -> tuple[ClientProtocol, bytes]:
    """A client that never answers anything: reads until the server closes, 15 s at most."""
    client = ClientProtocol(parse_uri(url.replace("http://", "ws://") + path), origin=ORIGIN)  # type: ignore[arg-type]
    request = client.connect()
    for name, value in headers.items():
        request.headers[name] = value
    client.send_request(request)
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(client.data_to_send()))
        received = await asyncio.wait_for(reader.read(-1), 15)
    finally:
        writer.close()
    return client, received


@pytest.mark.e2e
async def test_uvicorn_serves_the_gateway_protocol_a_silent_peer_is_closed_and_other_paths_get_404(
    gateway: ServiceProcess, issuer: TestIssuer
) -> None:
    token = issuer.mint(uuid.uuid4(), "USER")
    client, received = await raw_exchange(gateway.url, "/ws", {"Authorization": f"Bearer {token}"})
    client.receive_data(received)
    events = client.events_received()
    assert isinstance(events[0], Response) and events[0].status_code == 101
    frames = [e for e in events[1:] if isinstance(e, Frame)]
    assert orjson.loads(frames[0].data)["type"] == "hello"
    assert any(f.opcode is Opcode.PING for f in frames)
    assert Close.parse(frames[-1].data) == Close(1011, "keepalive ping timeout")

    client, received = await raw_exchange(gateway.url, "/elsewhere", {"Authorization": f"Bearer {token}"})
    client.receive_data(received)
    response = client.events_received()[0]
    assert isinstance(response, Response) and response.status_code == 404


@pytest.mark.e2e
async def test_a_peer_that_answers_pings_stays_open_past_many_keepalive_rounds(
    gateway: ServiceProcess, issuer: TestIssuer
) -> None:
    token = issuer.mint(uuid.uuid4(), "USER")
    url = gateway.url.replace("http://", "ws://") + "/ws"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, origin=ORIGIN, additional_headers=headers, ping_interval=None) as ws:  # type: ignore[arg-type]
        hello = orjson.loads(await ws.recv())
        assert hello["type"] == "hello"
        await asyncio.sleep(3)  # 15 ping intervals; the client library answers each ping
        await ws.send(orjson.dumps({"type": "ping", "ref": "alive"}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong", "ref": "alive"}
