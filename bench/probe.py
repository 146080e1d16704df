"""``python -m bench.probe``: the latency floor, one message at a time on an idle stack.

W2 measures latency under load; this measures the path itself: a user sends one message,
waits for its ``ack`` and for the administrator's ``message.new``, then pauses, and again.
It also times the store's RPC alone from a client on the broker (``conversation.get``, and
``message.send``: the RPC plus the send transaction), so the gateway's share, the broker round
trip and the transaction can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from bench.api import Api, ensure_admin, make_users
from bench.connections import open_connection
from bench.stack import LocalStack, StackConfig
from shared.messaging.connection import Broker
from shared.messaging.rpc import RpcClient
from shared.messaging.topology import Topology


async def _until(ws: ClientConnection, frame_type: str) -> None:
    while orjson.loads(await ws.recv()).get("type") != frame_type:
        pass


async def _timed(count: int, pause_s: float, once: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        await once(i)
        samples.append((time.perf_counter() - start) * 1000.0)
        await asyncio.sleep(pause_s)
    return samples


def _line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"{name:<40} p50 {statistics.median(ordered):6.2f}  p90 {p90:6.2f}  min {ordered[0]:6.2f} ms"


async def probe(count: int, pause_s: float) -> list[str]:
    async with LocalStack(StackConfig(), None) as stack:
        api = Api(stack)
        try:
            await ensure_admin(stack, "probeadmin", "probeadmin@example.com")
            admin = await api.login("probeadmin")
            [user] = await make_users(api, "probe", 1)
            cid = (await api.open_conversation(user, "probe"))["conversation_id"]
            sender = await open_connection(stack.ws_url, user.token, stack.origin)
            recipient = await open_connection(stack.ws_url, admin.token, stack.origin)
            for ws in (sender, recipient):
                await _until(ws, "hello")
                await ws.send(orjson.dumps({"type": "resume", "conversations": {}}).decode())
            await asyncio.sleep(1.0)
            acks: list[float] = []

            async def send(i: int) -> None:
                frame = {"type": "message.send", "conversation_id": cid, "client_id": f"p{i}", "body": "hi"}
                start = time.perf_counter()
                await sender.send(orjson.dumps(frame).decode())
                await _until(sender, "ack")
                acks.append((time.perf_counter() - start) * 1000.0)
                await _until(recipient, "message.new")

            delivered = await _timed(count, pause_s, send)
            broker = Broker(stack.amqp_url, Topology(prefix=stack.amqp_prefix), service="probe")
            await broker.start()
            rpc = RpcClient(broker, "store")
            await rpc.start()
            actor = {"user_id": user.user_id, "role": user.role}
            get = await _timed(
                count, pause_s, lambda i: rpc.call("conversation.get", {"conversation_id": cid}, actor=actor)
            )
            sent = await _timed(
                count,
                pause_s,
                lambda i: rpc.call(
                    "message.send", {"conversation_id": cid, "client_id": f"r{i}", "body": "hi"}, actor=actor
                ),
            )
            await rpc.stop()
            await broker.close()
            await sender.close()
            await recipient.close()
        finally:
            await api.close()
    return [
        _line("WebSocket send -> ack", acks),
        _line("WebSocket send -> recipient", delivered),
        _line("RPC conversation.get (broker + 1 read)", get),
        _line("RPC message.send (+ send transaction)", sent),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between messages")
    args = parser.parse_args()
    for line in asyncio.run(probe(args.count, args.pause)):
        print(line)


if __name__ == "__main__":
    main()
