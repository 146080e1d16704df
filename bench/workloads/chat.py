"""What W2 and W3 share: the connected population, the engine, the event tap, one measured step."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.connections import Client, close_all, connect_many
from bench.context import Context
from bench.engine import ChatEngine
from bench.frames import encode_client_text
from bench.model import Account
from bench.tap import EventTap


@dataclass
class ChatSession:
    engine: ChatEngine
    clients: list[Client]
    tap: EventTap | None
    idle_cores: dict[str, float] = field(default_factory=dict)  # per role, connected but silent

    async def close(self) -> None:
        if self.tap is not None:
            await self.tap.stop()
        await close_all(self.clients)


def devices(users: list[Account], admins: list[Account], connections: int) -> list[Account]:
    """One connection per administrator; users share the rest round-robin (most get two devices)."""
    out = list(admins)
    for i in range(max(0, connections - len(admins))):
        out.append(users[i % len(users)])
    return out


async def open_session(ctx: Context, *, tap: bool) -> ChatSession:
    pop = await ctx.chat_population()
    wanted = devices([c.user for c in pop.conversations], pop.admins, ctx.cfg.chat.connections)
    ctx.log(f"connecting {len(wanted)} WebSocket clients")
    result = await connect_many(ctx.stack.ws_url, wanted, ctx.stack.origin, concurrency=64)
    if result.failures:
        ctx.log(f"connection failures: {result.failures}")
    for client in result.clients:  # the gateway starts live delivery at a client's first frame
        client.transport.write(encode_client_text(b'{"type":"activity"}'))
    engine = ChatEngine(pop.conversations, result.clients, tag=f"{ctx.tag}{ctx.rng.randrange(1 << 30):x}")
    event_tap: EventTap | None = None
    if tap:
        event_tap = EventTap(
            ctx.stack.amqp_url, f"{ctx.stack.amqp_prefix}.events", "message.created", engine.on_event
        )
        await event_tap.start()
    await asyncio.sleep(1.0)  # let presence and delivery bindings settle before the first send
    session = ChatSession(engine, result.clients, event_tap)
    # What the system costs with everyone connected and nobody talking (timers, heartbeats, pings):
    # subtracted from each step to give the marginal CPU of a message.
    meter = await ctx.start_window()
    await asyncio.sleep(idle_window_s(ctx))
    idle = await ctx.stop_window(meter)
    session.idle_cores = {r: g.cpu_ms / 1000.0 / idle.wall_s for r, g in idle.groups.items()}
    ctx.writer.write(
        {
            "workload": "chat",
            "kind": "idle",
            "connections": len(result.clients),
            **ctx.window_record(idle, None),
        }
    )
    return session


def idle_window_s(ctx: Context) -> float:
    return min(10.0, max(1.0, ctx.cfg.w2.duration_s / 3))


def marginal_cpu(window: dict[str, Any], idle_cores: dict[str, float], messages: int) -> dict[str, float]:
    """CPU ms per message above the idle baseline, per role (negative noise clipped to 0)."""
    out: dict[str, float] = {}
    wall = float(window["wall_s"])
    for role, proc in window["processes"].items():
        extra = float(proc["cpu_ms"]) - idle_cores.get(role, 0.0) * wall * 1000.0
        out[role] = round(max(0.0, extra) / messages, 4) if messages else 0.0
    return out


async def measured_step(
    ctx: Context, session: ChatSession, workload: str, rate: float, duration_s: float, drain_s: float
) -> dict[str, Any]:
    """Plan (pre-encode), send open-loop, drain, and write one record with CPU and queue depths."""
    engine = session.engine
    plan = engine.plan(rate, duration_s, ctx.rng)
    record_obj = engine.steps[plan.step]
    mid_queues: dict[str, Any] = {}

    async def sample_queues() -> None:
        await asyncio.sleep(duration_s * 0.75)
        mid_queues.update(await ctx.queues())

    meter = await ctx.start_window()
    sampler = asyncio.create_task(sample_queues())
    await engine.run(plan)
    drained = await engine.drain(plan.step, drain_s)
    window = await ctx.stop_window(meter)
    await sampler
    after = await ctx.queues()
    record: dict[str, Any] = {"workload": workload, "kind": "step", **record_obj.as_dict()}
    record["drained"] = drained
    record["queues_during"] = mid_queues
    record["queues_after"] = after
    # Per message that went through the pipeline (acked = committed), not per message offered.
    processed = record_obj.acked or record_obj.sent
    record.update(ctx.window_record(window, processed))
    record["cpu_per_msg_basis"] = "acked" if record_obj.acked else "sent"
    record["marginal_cpu_ms_per_msg"] = marginal_cpu(record["window"], session.idle_cores, processed)
    record["other_frames"] = dict(engine.other_frames)
    closed = Counter(str(c.closed_code) for c in session.clients if c.closed_code is not None)
    record["closed_connections"] = dict(closed)  # cumulative over the session, by close code
    return record


async def settle(ctx: Context, session: ChatSession, step: int, limit_s: float = 90.0) -> float:
    """Between steps: let late acks, deliveries and broker backlogs finish so a step never starts
    with the previous one's leftovers. Returns the seconds it took."""
    start = time.monotonic()
    await session.engine.drain(step, limit_s)
    await ctx.settle_queues(start + limit_s)
    return time.monotonic() - start


def describe(record: dict[str, Any]) -> str:
    lat = record["latency_ms"]
    return (
        f"rate={record['rate']:.0f} sent={record['sent']} acked={record['acked']} "
        f"delivered={record['delivered']}/{record['expected_deliveries']} "
        f"ack p99={lat['send_to_ack']['p99']} recv p50={lat['send_to_recipient']['p50']} "
        f"p99={lat['send_to_recipient']['p99']} max={lat['send_to_recipient']['max']} "
        f"errors={record['errors']} loader={record['loader_cpu_cores']} "
        f"busy={record['window']['machine_busy_cores']}"
    )
