"""Fixed-window rate-limit arithmetic; the counter itself lives in PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` hits per ``window_s`` seconds for one key (``scope:subject``)."""

    scope: str
    limit: int
    window_s: int

    def key(self, subject: str) -> str:
        return f"{self.scope}:{subject}"


def window_start(now_s: float, window_s: int) -> int:
    """Start (epoch seconds) of the fixed window containing ``now_s``."""
    return int(now_s // window_s) * window_s


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-*`` headers, plus ``Retry-After`` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_s)
        return headers


def decide(count: int, limit: Limit, now_s: float) -> Decision:
    """Judge the ``count``-th hit of the current window."""
    start = window_start(now_s, limit.window_s)
    reset = max(1, math.ceil(start + limit.window_s - now_s))
    return Decision(
        allowed=count <= limit.limit,
        limit=limit.limit,
        remaining=max(0, limit.limit - count),
        reset_s=reset,
    )


def most_restrictive(decisions: list[Decision]) -> Decision | None:
    """The decision to report: a refusal first, else the one with the fewest hits left."""
    if not decisions:
        return None
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: d.reset_s)
    return min(decisions, key=lambda d: (d.remaining, -d.reset_s))
