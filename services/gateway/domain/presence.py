"""Presence rules: a user's state over every device on every live gateway instance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

State = Literal["active", "idle", "offline"]


@dataclass(frozen=True)
class InstanceShare:
    """One gateway instance's view of one user."""

    connections: int
    active: bool
    alive: bool  # its heartbeat is younger than the time-to-live


def aggregate(shares: Iterable[InstanceShare]) -> State:
    """Active if any live device is active, idle if any live device is connected, else offline."""
    state: State = "offline"
    for share in shares:
        if not share.alive or share.connections <= 0:
            continue
        if share.active:
            return "active"
        state = "idle"
    return state


def local_state(connections: int, active_connections: int) -> State:
    if connections <= 0:
        return "offline"
    return "active" if active_connections > 0 else "idle"


def is_idle(last_activity: float, now: float, idle_after_s: float) -> bool:
    return now - last_activity >= idle_after_s
