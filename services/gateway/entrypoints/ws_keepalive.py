"""WebSocket keepalive as one periodic sweep over every socket, instead of a timer per connection.

A socket quiet for ``interval`` seconds gets a ping; one that has sent nothing
for ``timeout`` seconds after that ping is closed with 1011. Anything received
counts as a sign of life, not only the pong: a peer that talks is alive.
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Protocol

SWEEPS_PER_INTERVAL = 4  # a ping or a timeout is late by at most a quarter of the shorter setting
MAX_SWEEP_S = 5.0


class Action(enum.Enum):
    NONE = 0
    PING = 1
    EXPIRE = 2


def keepalive_action(
    now: float, last_seen: float, ping_sent_at: float, interval: float, timeout: float
) -> Action:
    """``ping_sent_at`` is 0 when no ping is waiting for an answer."""
    if ping_sent_at:
        return Action.EXPIRE if now - ping_sent_at >= timeout else Action.NONE
    return Action.PING if now - last_seen >= interval else Action.NONE


class KeptAlive(Protocol):
    last_seen: float
    ping_sent_at: float

    def keepalive_ping(self, now: float) -> None: ...
    def keepalive_expired(self) -> None: ...


class Keepalive:
    """The sockets to watch; ``run`` is the sweep (one task per process)."""

    __slots__ = ("interval", "sockets", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.sockets: set[KeptAlive] = set()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @property
    def period(self) -> float:
        shortest = min(self.interval, self.timeout) if self.timeout > 0 else self.interval
        return min(MAX_SWEEP_S, max(0.05, shortest / SWEEPS_PER_INTERVAL))

    def watch(self, sock: KeptAlive) -> None:
        if self.enabled:
            self.sockets.add(sock)

    def forget(self, sock: KeptAlive) -> None:
        self.sockets.discard(sock)

    def sweep(self, now: float) -> None:
        interval, timeout = self.interval, self.timeout if self.timeout > 0 else float("inf")
        for sock in list(self.sockets):
            action = keepalive_action(now, sock.last_seen, sock.ping_sent_at, interval, timeout)
            if action is Action.PING:
                sock.keepalive_ping(now)
            elif action is Action.EXPIRE:
                self.sockets.discard(sock)
                sock.keepalive_expired()

    async def run(self) -> None:
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(self.period)
            self.sweep(time.monotonic())
