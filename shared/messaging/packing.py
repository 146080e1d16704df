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


def runs(
    rows: Iterable[R],
    key: Callable[[R], object | None],
    size: Callable[[R], int],
    events: Callable[[R], int] = lambda _row: 1,
) -> list[list[R]]:
    """Split ``rows`` (in order) into runs of equal ``key``; a ``None`` key is never packed.

    A run stays within ``MAX_PACK_EVENTS`` events (``events``: how many a row holds, when rows
    may be packs already) and ``MAX_PACK_BYTES``.
    """
    out: list[list[R]] = []
    run_key: object | None = None
    run_bytes = run_events = 0
    for row in rows:
        k = key(row)
        n = size(row)
        e = events(row)
        if (
            out
            and k is not None
            and k == run_key
            and run_events + e <= MAX_PACK_EVENTS
            and run_bytes + n <= MAX_PACK_BYTES
        ):
            out[-1].append(row)
            run_bytes += n
            run_events += e
            continue
        out.append([row])
        run_key, run_bytes, run_events = k, n, e
    return out
