"""``/ws`` as a lean asyncio protocol under uvicorn, outside the ASGI stack (memory per idle socket).

uvicorn hands an upgrade request to the protocol class given as ``ws=``
(``shared.runtime.serve``). This one drives the ``websockets`` sans-I/O
``ServerProtocol`` directly: an idle connection is this object, its
``ServerProtocol``, its transport and its ``Connection``; no ASGI scope, no
queues and no task. A task exists only while something happens: the handshake
(token check, attach, ``hello``), frames waiting to be handled (strictly one
after another, as ``Connection.handle`` awaits its RPCs) and the teardown.
Keepalive pings come from one sweep for the whole process (``ws_keepalive``).

The handshake answers as the Starlette route did: a foreign Origin gets 403,
another path 404, a missing or invalid token an accepted socket closed with
4001, unverifiable tokens (auth's keys unreachable) 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from services.gateway.connection import CLOSE_TOKEN_EXPIRED, Connection, frame_text
from services.gateway.entrypoints.ws_handshake import Upgrade, check_upgrade, header_map
from services.gateway.entrypoints.ws_keepalive import Keepalive
from services.gateway.hub import Hub
from shared.logging import get_logger
from shared.security import InvalidToken, KeysUnavailable, Principal

log = get_logger(__name__)
# The logger uvicorn's own WebSocket protocols use; ``configure_logging`` keeps it at WARNING, so
# the sans-I/O layer's per-connection "connection open/closed" lines stay out of the logs.
_PROTOCOL_LOG = logging.getLogger("uvicorn.error")

CLOSE_TRY_AGAIN = 1013
CLOSE_SERVICE_RESTART = 1012
CLOSE_INTERNAL = 1011
CLOSE_INVALID_DATA = 1007
CLOSE_TIMEOUT_S = 10.0  # a peer that never answers our close frame is cut off after this
_DATA = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
INBOX_PAUSE = 16  # frames waiting to be handled before we stop reading from the socket


class WsContext:
    """What every socket of this process shares: the hub, the Origin allow-list, the keepalive sweep."""

    __slots__ = ("allowed_origins", "hub", "keepalive")

    def __init__(self, hub: Hub, allowed_origins: list[str]) -> None:
        self.hub = hub
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        s = hub.settings
        self.keepalive = Keepalive(s.ws_ping_interval_s, s.ws_ping_timeout_s)

    def start(self) -> None:
        """Run the keepalive sweep as a hub task (cancelled when the hub stops)."""
        self.hub.spawn(self.keepalive.run())


def context_of(app: object) -> WsContext:
    """The context the app's lifespan put on ``app.state.ws``, looking through uvicorn's wrappers."""
    for _ in range(8):
        ctx = getattr(getattr(app, "state", None), "ws", None)
        if isinstance(ctx, WsContext):
            return ctx
        app = getattr(app, "app", None)
        if app is None:
            break
    raise RuntimeError("no WebSocket context on the app: is the gateway lifespan running?")


class GatewayWebSocket(asyncio.Protocol):
    """One WebSocket connection; also the ``Socket`` its ``Connection`` writes to."""

    __slots__ = (
        "_close_timer",
        "_conn",
        "_ctx",
        "_inbox",
        "_lost",
        "_parts",
        "_read_paused",
        "_server_state",
        "_task",
        "_writable",
        "last_seen",
        "ping_sent_at",
        "proto",
        "transport",
    )

    def __init__(self, config: Any, server_state: Any, app_state: Any = None, **_: Any) -> None:
        """uvicorn's HTTP protocol builds one per upgrade request, with these keyword arguments."""
        if not config.loaded:
            config.load()
        self._ctx = context_of(config.loaded_app)
        self._server_state = server_state
        self.proto = ServerProtocol(max_size=self._ctx.hub.settings.ws_max_size, logger=_PROTOCOL_LOG)
        self.transport: asyncio.Transport | None = None
        self._conn: Connection | None = None
        self._inbox: deque[str | bytes] | None = None  # frames waiting to be handled
        self._parts: tuple[bool, list[bytes]] | None = None  # a fragmented message: (is text, parts)
        self._task: asyncio.Task[None] | None = None  # the handshake, then the inbox drain
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._close_timer: asyncio.TimerHandle | None = None
        self._read_paused = False
        self._lost = False
        self.last_seen = time.monotonic()
        self.ping_sent_at = 0.0

    # --- transport callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the subclassing
        self._server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        try:
            proto.receive_data(data)
        except EOFError:  # data after the stream ended: nothing more to read
            return
        self.last_seen = time.monotonic()
        self.ping_sent_at = 0.0  # whatever arrived, the peer is alive
        for event in proto.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    self._message(event)
                elif event.opcode is Opcode.CLOSE:
                    self._release()  # the protocol echoes the close and ends the stream
                # PING is answered by the protocol (flushed below); a PONG only had to arrive
            elif isinstance(event, Request):
                self._upgrade(event)
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server_state.connections.discard(self)
        self._ctx.keepalive.forget(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._wake_writers()
        self._inbox = None
        self._release()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writers()

    def shutdown(self) -> None:
        """uvicorn is stopping: close open sockets with 1012 so clients reconnect to another instance."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.proto.state is OPEN and self._conn is not None:
            self.proto.send_close(CLOSE_SERVICE_RESTART)
            self._flush()
        self._release()
        transport.close()

    # --- the Socket a Connection writes to --------------------------------------

    async def send_text(self, data: str) -> None:
        """Write one text frame; waits while the transport's buffer is above its high-water mark."""
        while self._writable is not None:
            await self._writable
        if self._gone():
            raise ConnectionError("websocket is closed")
        self.proto.send_text(data.encode())
        self._flush()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame now (even past a full buffer: it queues behind what is there)."""
        if not self._gone():
            self.proto.send_close(code, reason or "")
            self._flush()
            self._closing()

    # --- keepalive ----------------------------------------------------------------

    def keepalive_ping(self, now: float) -> None:
        if self._read_paused:  # we stopped reading, not the peer: its pong waits in the socket
            self.last_seen = now
            return
        if self._gone():
            return
        self.ping_sent_at = now
        self.proto.send_ping(b"")
        self._flush()

    def keepalive_expired(self) -> None:
        transport = self.transport
        if transport is None or self._gone():
            return
        log.info("ws_keepalive_timeout")
        self.proto.fail(CLOSE_INTERNAL, "keepalive ping timeout")
        self._flush()
        self._release()
        if self._writable is not None:  # nothing drains a full buffer of a peer that is gone
            transport.abort()

    # --- handshake ---------------------------------------------------------------

    def _upgrade(self, request: Request) -> None:
        settings = self._ctx.hub.settings
        verdict = check_upgrade(
            request.path,
            header_map(request.headers.raw_items()),
            self._ctx.allowed_origins,
            cookie_name=settings.access_cookie,
            subprotocol=settings.subprotocol,
        )
        if not isinstance(verdict, Upgrade):
            log.info("ws_refused", status=verdict)
            self.proto.send_response(self.proto.reject(verdict, "" if verdict == 403 else "Not Found\n"))
            return
        response = self.proto.accept(request)
        if response.status_code != 101:  # not a valid WebSocket handshake
            self.proto.send_response(response)
            return
        self._task = self._spawn(self._open(response, verdict))

    async def _open(self, response: Response, upgrade: Upgrade) -> None:
        hub = self._ctx.hub
        principal: Principal | None = None
        refusal = (CLOSE_TOKEN_EXPIRED, "missing access token")
        if upgrade.token is not None:
            try:
                principal = await hub.verifier.verify(upgrade.token)
            except KeysUnavailable:
                # Not the token's fault: 1013 says "try again later", 4001 would make the client drop it.
                refusal = (CLOSE_TRY_AGAIN, "cannot verify tokens right now")
            except (InvalidToken, Exception):
                refusal = (CLOSE_TOKEN_EXPIRED, "invalid access token")
        if self._lost or self.transport is None or self.transport.is_closing():
            self._task = None
            return
        if principal is None:
            # Accepted, then closed: browsers see a close code, never a bare HTTP status.
            self.proto.send_response(response)
            await self.close(*refusal)
            self._task = None
            return
        if upgrade.subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = upgrade.subprotocol
        self.proto.send_response(response)
        self._flush()
        self._ctx.keepalive.watch(self)
        conn = self._conn = Connection(self, principal, hub)
        settings = hub.settings
        try:
            await hub.attach(conn)
            # Sent before the writer starts: live frames wait for the client's first frame (its resume).
            await self.send_text(
                frame_text(
                    "hello",
                    user_id=conn.user,
                    role=principal.role,
                    connection_id=conn.id,
                    expires_at=principal.expires_at,
                    limits={
                        "max_frame_bytes": settings.max_frame_bytes,
                        "rate_per_s": settings.rate_per_s,
                        "rate_burst": settings.rate_burst,
                        "replay_max": settings.replay_max,
                        "idle_after_s": settings.idle_after_s,
                    },
                )
            )
        except Exception as exc:
            # The client left during attach (connection_lost releases it), or binding its user key
            # failed: close (1011, "reconnect and resume") rather than leave a socket that gets nothing.
            if not self._gone():
                log.warning("ws_attach_failed", error=type(exc).__name__)
                await self.close(CLOSE_INTERNAL, "could not join this gateway")
            self._task = None
            return
        if self._conn is not conn:  # released meanwhile (closed by the peer, shutdown)
            self._task = None
            return
        conn.start()
        await self._drain()

    # --- incoming frames ---------------------------------------------------------------

    def _message(self, frame: Frame) -> None:
        data = bytes(frame.data)
        if frame.opcode is Opcode.CONT:
            if self._parts is None:
                return
            is_text, parts = self._parts
            parts.append(data)
            if not frame.fin:
                return
            self._parts = None
            data = b"".join(parts)
        else:
            is_text = frame.opcode is Opcode.TEXT
            if not frame.fin:  # the first fragment (the protocol bounds the whole message's size)
                self._parts = (is_text, [data])
                return
        raw: str | bytes = data
        if is_text:
            try:
                raw = data.decode()
            except UnicodeDecodeError:
                self.proto.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text frame")
                self._release()
                return
        if self._gone():
            return  # past our close frame: discard, keep reading for the peer's close
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(raw)
        if len(inbox) >= INBOX_PAUSE and not self._read_paused and self.transport is not None:
            # The client outpaces its own handling (each frame may await an RPC): let TCP push back.
            self._read_paused = True
            self.transport.pause_reading()
        if self._task is None and self._conn is not None:
            self._task = self._spawn(self._drain())

    async def _drain(self) -> None:
        """Handle waiting frames in arrival order, then end: an idle connection holds no task."""
        conn = self._conn
        try:
            while conn is not None and self._inbox and not conn.closed:
                await conn.handle(self._inbox.popleft())
        except Exception as exc:  # handle() turns failures into error frames; this is a bug guard
            log.warning("ws_frame_failed", error=type(exc).__name__)
            await self.close(CLOSE_INTERNAL, "internal error")
        finally:
            self._task = None
            self._inbox = None
            if self._read_paused and not self._lost and self.transport is not None:
                self._read_paused = False
                self.transport.resume_reading()

    # --- plumbing ------------------------------------------------------------------------

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.proto.data_to_send():
            if transport.is_closing():
                return
            if chunk:
                transport.write(chunk)
            else:  # end of stream: the server closes the TCP connection (after what is buffered)
                transport.close()

    def _closing(self) -> None:
        """Our close frame is out: stop watching, release the connection, cut off a silent peer later."""
        self._ctx.keepalive.forget(self)
        self._release()
        if self._close_timer is None and self.transport is not None and not self._lost:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.abort)

    def _gone(self) -> bool:
        """True once nothing more can be sent: the socket is lost or closing, or our close frame is out."""
        transport = self.transport
        return self._lost or transport is None or transport.is_closing() or self.proto.state is not OPEN

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _release(self) -> None:
        """The connection leaves the hub once (close sent or received, or the socket gone)."""
        conn, self._conn = self._conn, None
        self._inbox = None  # frames behind a close are not handled
        if conn is not None:
            _ = self._spawn(_teardown(self._ctx.hub, conn))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task uvicorn waits for on shutdown (its graceful timeout), like an ASGI handler's."""
        task = asyncio.get_running_loop().create_task(coro)
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task


async def _teardown(hub: Hub, conn: Connection) -> None:
    with contextlib.suppress(Exception):
        await hub.detach(conn)
    await conn.stop()
