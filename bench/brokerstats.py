"""Broker queue depths for the bench vhost, from ``rabbitmqctl list_queues`` (as operators read them).

Each call starts an Erlang VM (~0.5 s of CPU), so the workloads sample between
measured windows, never inside one.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int  # ready + unacknowledged
    unacked: int
    consumers: int


def parse_list_queues(raw: bytes) -> list[QueueDepth]:
    """Parse ``rabbitmqctl -q list_queues ... --formatter json`` output."""
    rows = orjson.loads(raw or b"[]")
    return [
        QueueDepth(
            str(r["name"]),
            int(r.get("messages") or 0),
            int(r.get("messages_unacknowledged") or 0),
            int(r.get("consumers") or 0),
        )
        for r in rows
    ]


async def queue_depths(vhost: str, timeout: float = 30.0) -> list[QueueDepth]:
    """Depth of every queue in ``vhost``; empty when rabbitmqctl is not available here."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages",
            "messages_unacknowledged",
            "consumers",
            "--formatter",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return []
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return []
    if proc.returncode != 0:
        return []
    return parse_list_queues(out)


def depths_dict(depths: list[QueueDepth]) -> dict[str, dict[str, int]]:
    """JSON-friendly form; only non-empty queues, so a growing backlog stands out."""
    return {
        d.name: {"messages": d.messages, "unacked": d.unacked, "consumers": d.consumers}
        for d in depths
        if d.messages or d.unacked
    }


def total_backlog(depths: list[QueueDepth]) -> int:
    return sum(d.messages for d in depths)


async def dead_letter_reasons(amqp_url: str, queue: str, limit: int = 500) -> dict[str, int]:
    """Why messages sit in the dead-letter queue: counts by reason, peeked and left in place.

    Messages are fetched without ack and requeued when the channel closes.
    """
    import aio_pika

    reasons: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        try:
            dead = await channel.declare_queue(queue, passive=True)
        except Exception:
            return reasons
        for _ in range(limit):
            message = await dead.get(no_ack=False, fail=False)
            if message is None:
                break
            headers: dict[str, Any] = dict(message.headers or {})
            reason: Any = headers.get("x-failure-reason")
            if reason is None:
                death = headers.get("x-death")
                first: Any = death[0] if isinstance(death, list) and death else None
                reason = f"{first.get('reason', '?')} from {first.get('queue', '?')!r}" if first else "?"
            key = f"{message.routing_key}: {str(reason)[:120]}"
            reasons[key] = reasons.get(key, 0) + 1
    finally:
        await connection.close()
    return reasons
