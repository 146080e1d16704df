"""One WebSocket connection: frame handling (reader side) and an ordered, bounded writer.

Outgoing frames go through a bounded queue drained by a writer task that
exists only while there is something to write (an idle connection holds no
task), so a slow client never blocks delivery to anyone else; when its queue
overflows the connection is closed with 4009. The writer keeps every conversation in
``seq`` order for this connection: duplicates are dropped and a gap is filled
from the store (or answered with ``reload`` when it is too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from services.gateway.domain.frames import (
    DeleteFrame,
    EditFrame,
    FrameError,
    PingFrame,
    ReadFrame,
    RefreshFrame,
    ResumeFrame,
    SendFrame,
    TypingFrame,
    error_frame,
    parse_frame,
)
from services.gateway.domain.ratelimit import TokenBucket
from services.gateway.domain.sequencing import Step, decide, gap_too_large
from shared.commands import MAX_PAGE
from shared.logging import get_logger
from shared.messaging.rpc import RpcError
from shared.security import InvalidToken, KeysUnavailable, Principal

if TYPE_CHECKING:
    from services.gateway.hub import Hub

log = get_logger(__name__)

CLOSE_TOKEN_EXPIRED = 4001  # missing, invalid or expired access token
CLOSE_RATE_LIMIT = 4008
CLOSE_TOO_SLOW = 4009
CLOSE_INTERNAL = 1011
RESYNC_MAX_CONVERSATIONS = 500  # the store's ``sync`` limit
PEERS_TTL_S = 10.0  # how long typing trusts a conversation's cached participants


_EMPTY: deque[Any] = deque(maxlen=0)  # shared by every idle connection; never appended to


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class Item:
    """An outgoing frame, shared by every connection it goes to; ordered when ``seq`` is set."""

    __slots__ = ("conversation", "seq", "text")

    def __init__(self, text: str, conversation: str | None = None, seq: int | None = None) -> None:
        self.text = text
        self.conversation = conversation
        self.seq = seq


class ResumeMark:
    __slots__ = ("conversations", "quiet")

    def __init__(self, conversations: dict[str, int], *, quiet: bool = False) -> None:
        self.conversations = conversations
        self.quiet = quiet  # a server-side resync: no ``resumed`` frame, no error frame


def frame_text(frame_type: str, **data: Any) -> str:
    return orjson.dumps({"type": frame_type, **data}).decode()


class Connection:
    __slots__ = (
        "_gate_timer",
        "_open",
        "active",
        "bucket",
        "closed",
        "cursors",
        "hub",
        "id",
        "last_activity",
        "peers",
        "principal",
        "queue",
        "user",
        "violations",
        "writer",
        "ws",
    )

    def __init__(self, ws: Socket, principal: Principal, hub: Hub) -> None:
        now = time.monotonic()
        self.id = uuid.uuid4().hex[:16]
        self.ws = ws
        self.principal = principal
        self.user = str(principal.user_id)
        self.hub = hub
        self.queue: deque[Item | ResumeMark] = _EMPTY  # a real deque only while frames wait
        self._open = False  # live delivery starts at the first client frame (its resume)
        self._gate_timer: asyncio.TimerHandle | None = None
        self.cursors: dict[str, int] = {}  # conversation -> last seq sent on this connection
        # conversation -> (participants, fetched at): typing fan-out, refetched after a reassignment
        self.peers: dict[str, tuple[list[str], float]] = {}
        s = hub.settings
        self.bucket = TokenBucket(s.rate_per_s, s.rate_burst, now)
        self.violations = 0
        self.last_activity = now
        self.active = True
        self.closed = False
        self.writer: asyncio.Task[None] | None = None

    # --- outgoing ---------------------------------------------------------------

    def push(self, item: Item | ResumeMark) -> None:
        """Queue a frame; never blocks. Overflow closes the connection instead of growing memory."""
        if self.closed:
            return
        if len(self.queue) >= self.hub.settings.send_buffer_frames:
            self.abort(CLOSE_TOO_SLOW, "too slow: send buffer full")
            return
        if self.queue is _EMPTY:
            self.queue = deque()
        self.queue.append(item)
        if self.writer is None and self._open:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    def say(self, text: str | bytes) -> None:
        self.push(Item(text.decode() if isinstance(text, bytes) else text))

    def resync(self) -> None:
        """Fetch what may have been lost in transit past this connection's cursors (broker reconnect)."""
        if self.cursors and not self.closed:
            positions = dict(list(self.cursors.items())[:RESYNC_MAX_CONVERSATIONS])
            self.push(ResumeMark(positions, quiet=True))

    def abort(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue = _EMPTY
        self.hub.spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), 5.0)

    def start(self) -> None:
        """Open the gate at the first client frame, or after ``resume_wait_s`` without one."""
        loop = asyncio.get_running_loop()
        self._gate_timer = loop.call_later(self.hub.settings.resume_wait_s, self.open_gate)

    def open_gate(self) -> None:
        if self._open:
            return
        self._open = True
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
        if self.queue and self.writer is None and not self.closed:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def stop(self) -> None:
        self.closed = True
        if self._gate_timer is not None:
            self._gate_timer.cancel()
        writer = self.writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _drain(self) -> None:
        """Write until the queue is empty, then end (the next push starts a new writer)."""
        try:
            while self.queue and not self.closed:
                item = self.queue.popleft()
                if isinstance(item, ResumeMark):
                    await self._resume(item)
                elif item.seq is None or item.conversation is None:
                    await self.ws.send_text(item.text)
                else:
                    await self._ordered(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The socket went away under us, or a replay failed: close it so the reader side cleans
            # up and the client reconnects and resumes, instead of a socket that silently gets nothing.
            self.abort(CLOSE_INTERNAL, "delivery failed")
        finally:
            self.writer = None
            if not self.queue:
                self.queue = _EMPTY  # idle connections keep no buffer

    async def _ordered(self, item: Item) -> None:
        conv, seq = item.conversation, item.seq
        assert conv is not None and seq is not None
        step = decide(self.cursors.get(conv), seq)
        if step is Step.GAP:
            await self._fill(conv, self.cursors[conv], seq)
            step = decide(self.cursors.get(conv), seq)
            if step is Step.GAP:  # the fill could not close it: continue from here
                step = Step.SEND
        if step is Step.SEND:
            await self.ws.send_text(item.text)
            self.cursors[conv] = seq

    async def _fill(self, conv: str, last: int, upto: int) -> None:
        """Fetch what this connection missed before ``upto`` (a relay raced another, or a resume)."""
        if gap_too_large(last, upto, self.hub.settings.replay_max):
            await self._reload(conv, upto - 1)
            return
        after = last
        try:
            while after < upto - 1:
                page = await self.hub.store.call(
                    "message.history",
                    {"conversation_id": conv, "after": after, "before": upto, "limit": MAX_PAGE},
                    self.principal,
                )
                messages = page["messages"]
                if not messages:
                    break
                for message in messages:
                    await self._send_message(conv, message)
                after = messages[-1]["seq"]
        except RpcError:
            await self._reload(conv, upto - 1)

    async def _reload(self, conv: str, position: int) -> None:
        await self.ws.send_text(frame_text("reload", conversation_id=conv))
        self.cursors[conv] = position

    async def _send_message(self, conv: str, message: dict[str, Any]) -> None:
        seq = int(message["seq"])
        if decide(self.cursors.get(conv), seq) is Step.DROP:
            return
        await self.ws.send_text(frame_text("message.new", **message))
        self.cursors[conv] = seq

    async def _resume(self, mark: ResumeMark) -> None:
        try:
            result = await self.hub.store.call(
                "sync",
                {"conversations": mark.conversations, "max_replay": self.hub.settings.replay_max},
                self.principal,
            )
        except RpcError as exc:
            if not mark.quiet:
                await self.ws.send_text(error_frame(exc.code, exc.message).decode())
            return
        for message in result["messages"]:
            await self._send_message(str(message["conversation_id"]), message)
        for conv in result["reload"]:
            await self.ws.send_text(frame_text("reload", conversation_id=conv))
            self.cursors.pop(str(conv), None)
        for conv in result["not_found"]:
            if not mark.quiet:
                await self.ws.send_text(
                    error_frame("not_found", "conversation not found", conversation_id=str(conv)).decode()
                )
            self.cursors.pop(str(conv), None)
        if not mark.quiet:
            await self.ws.send_text(frame_text("resumed"))

    # --- incoming ---------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        """Handle one client frame; every failure becomes an error frame, never an exception."""
        now = time.monotonic()
        wait = self.bucket.take(now)
        if wait:
            self.open_gate()
            self.violations += 1
            if self.violations >= self.hub.settings.rate_violations_before_close:
                self.abort(CLOSE_RATE_LIMIT, "rate limit exceeded")
                return
            self.say(error_frame("rate_limited", "too many frames", retry_after_ms=int(wait * 1000) + 1))
            return
        self.violations = 0
        try:
            frame = parse_frame(raw, self.hub.settings.max_frame_bytes)
        except FrameError as exc:
            self.open_gate()
            self.say(error_frame(exc.code, exc.message, exc.ref))
            return
        if not isinstance(frame, ResumeFrame):
            self.open_gate()
        try:
            await self._dispatch(frame, now)
        except RpcError as exc:
            self.say(error_frame(exc.code, exc.message, frame.ref, **exc.extra))
        except Exception as exc:  # e.g. the broker is down for a typing publish: the socket stays usable
            log.warning("frame_failed", frame_type=type(frame).__name__, error=type(exc).__name__)
            self.say(error_frame("unavailable", "temporarily unavailable, retry", frame.ref))

    async def _dispatch(self, frame: Any, now: float) -> None:
        if isinstance(frame, SendFrame):
            self.touch(now)
            result = await self.hub.sends.send(
                self.principal,
                {
                    "conversation_id": str(frame.conversation_id),
                    "client_id": frame.client_id,
                    "body": frame.body,
                },
            )
            message = result["message"]
            self.say(
                frame_text(
                    "ack",
                    ref=frame.ref,
                    client_id=frame.client_id,
                    conversation_id=message["conversation_id"],
                    message_id=message["message_id"],
                    seq=message["seq"],
                    created_at=message["created_at"],
                    duplicate=result["duplicate"],
                )
            )
        elif isinstance(frame, EditFrame | DeleteFrame):
            self.touch(now)
            params: dict[str, Any] = {"message_id": str(frame.message_id)}
            if isinstance(frame, EditFrame):
                params["body"] = frame.body
            method = "message.edit" if isinstance(frame, EditFrame) else "message.delete"
            message = (await self.hub.store.call(method, params, self.principal))["message"]
            self.say(frame_text("ack", ref=frame.ref, message_id=message["message_id"], seq=message["seq"]))
        elif isinstance(frame, ReadFrame):
            self.touch(now)
            result = await self.hub.store.call(
                "message.read",
                {"conversation_id": str(frame.conversation_id), "seq": frame.seq},
                self.principal,
            )
            self.say(frame_text("ack", ref=frame.ref, **result))
        elif isinstance(frame, TypingFrame):
            self.touch(now)
            await self._typing(str(frame.conversation_id), now)
        elif isinstance(frame, ResumeFrame):
            positions = {str(cid): seq for cid, seq in frame.conversations.items()}
            for conv, seq in positions.items():
                self.cursors[conv] = seq
            self.push(ResumeMark(positions))
            self.open_gate()  # after the positions are set: nothing live overtakes the replay
        elif isinstance(frame, RefreshFrame):
            await self._refresh(frame)
        elif isinstance(frame, PingFrame):
            self.say(frame_text("pong", ref=frame.ref))
        else:  # activity
            self.touch(now)

    def touch(self, now: float) -> None:
        """The user did something: active again (presence changes only on the transition)."""
        self.last_activity = now
        if not self.active:
            self.active = True
            self.hub.presence_changed(self.user)

    async def _typing(self, conv: str, now: float) -> None:
        cached = self.peers.get(conv)
        if cached is None or now - cached[1] >= PEERS_TTL_S:
            # Refetched now and then: after a reassignment the former admin must stop getting
            # this conversation's typing (and the new one start), not only after a reconnect.
            view = await self.hub.store.call("conversation.get", {"conversation_id": conv}, self.principal)
            cached = ([str(p) for p in (view["user_id"], view["admin_id"]) if p is not None], now)
            self.peers[conv] = cached
        peers = cached[0]
        others = [p for p in peers if p != self.user]
        if others:
            await self.hub.publish_typing(conv, self.user, others)

    async def _refresh(self, frame: RefreshFrame) -> None:
        try:
            principal = await self.hub.verifier.verify(frame.token)
        except KeysUnavailable:
            self.say(error_frame("unavailable", "cannot verify tokens right now, retry", frame.ref))
            return
        except InvalidToken:
            self.say(error_frame("invalid_token", "token refused", frame.ref))
            return
        if principal.user_id != self.principal.user_id or principal.role != self.principal.role:
            self.say(error_frame("invalid_token", "token belongs to someone else", frame.ref))
            return
        self.principal = principal
        self.say(frame_text("auth.refreshed", ref=frame.ref, expires_at=principal.expires_at))
