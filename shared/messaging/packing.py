"""Several events in one AMQP message: consecutive outbox events with the same routing key.

Under load a group commit writes many events of one type at once (``message.created``,
``message.unread``…). Publishing each as its own message costs a publish, a confirm, a quorum
queue entry and a consume per event; packing a run of them costs one of each per run. Every
event keeps its own id, type and version inside the pack, so consumers stay idempotent per
event; the unit of retry and dead-lettering becomes the pack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

PACKED_HEADER = "x-events"  # how many events the body's JSON array holds
MAX_PACK_EVENTS = 100
MAX_PACK_BYTES = 256 * 1024

R = TypeVar("R")


def pack(bodies: list[bytes]) -> bytes:
    """A JSON array of already encoded events (each encoded once, never re-encoded)."""
    return b"[" + b",".join(bodies) + b"]"


def is_packed(headers: Mapping[str, Any] | None) -> bool:
    return bool((headers or {}).get(PACKED_HEADER))


def runs(rows: Iterable[R], key: Callable[[R], object | None], size: Callable[[R], int]) -> list[list[R]]:
    """Split ``rows`` (in order) into runs of equal ``key``; a ``None`` key is never packed."""
    out: list[list[R]] = []
    run_key: object | None = None
    run_bytes = 0
    for row in rows:
        k = key(row)
        n = size(row)
        if (
            out
            and k is not None
            and k == run_key
            and len(out[-1]) < MAX_PACK_EVENTS
            and run_bytes + n <= MAX_PACK_BYTES
        ):
            out[-1].append(row)
            run_bytes += n
            continue
        out.append([row])
        run_key, run_bytes = k, n
    return out
