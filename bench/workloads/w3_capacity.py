"""W3 capacity: step the rate up until p99 send→recipient passes the limit or the backlog grows."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.workloads.chat import describe, measured_step, open_session, settle


def verdict(record: dict[str, Any], p99_limit_ms: float) -> str | None:
    """Why a step did not hold, or None when it held."""
    p99 = record["latency_ms"]["send_to_recipient"]["p99"]
    if not record["drained"]:
        return "not drained (acks or deliveries missing after the drain window)"
    if record["lost_deliveries"]:
        return f"{record['lost_deliveries']} deliveries missing"
    if record["errors"]:
        return f"error frames {record['errors']}"
    if record.get("closed_connections"):
        return f"connections closed by the server {record['closed_connections']}"
    if record["send_failed"]:
        return f"{record['send_failed']} sends on closed connections"
    if p99 is None or p99 != p99 or p99 > p99_limit_ms:
        return f"p99 send→recipient {p99} ms > {p99_limit_ms} ms"
    during = record.get("queues_during", {})
    if during.get("backlog", 0) > record["rate"] * 0.5:
        grown = {
            name: q["messages"]
            for name, q in during.get("queues", {}).items()
            if not name.endswith(".dead") and q["messages"] > record["rate"] * 0.25
        }
        return f"broker queues growing during the step: {grown}"
    return None


async def run(ctx: Context) -> None:
    cfg = ctx.cfg.w3
    session = await open_session(ctx, tap=cfg.tap)
    capacity = 0.0
    reason = "every step held"
    try:
        # A short warm-up so the first step does not pay for cold pools and caches.
        warm = session.engine.plan(cfg.rates[0] / 2, min(3.0, cfg.duration_s), ctx.rng)
        await session.engine.run(warm)
        await session.engine.drain(warm.step, cfg.drain_s)
        for rate in cfg.rates:
            record = await measured_step(ctx, session, "W3", rate, cfg.duration_s, cfg.drain_s)
            why = verdict(record, cfg.p99_limit_ms)
            record["held"] = why is None
            record["reason"] = why
            if why is None:
                record["settle_s"] = round(await settle(ctx, session, len(session.engine.steps) - 1), 1)
            ctx.writer.write(record)
            ctx.log("W3 " + describe(record) + f" held={why is None}")
            if why is not None:
                reason = f"at {rate:.0f} msg/s: {why}"
                break
            capacity = rate
    finally:
        ctx.writer.write({"workload": "W3", "kind": "capacity", "capacity": capacity, "reason": reason})
        ctx.log(f"W3 capacity {capacity:.0f} msg/s ({reason})")
        await session.close()
