"""W3 capacity: step the rate up until p99 send→recipient passes the limit or the backlog grows."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.workloads.chat import describe, measured_step, open_session


def verdict(record: dict[str, Any], p99_limit_ms: float) -> str | None:
    """Why a step did not hold, or None when it held."""
    p99 = record["latency_ms"]["send_to_recipient"]["p99"]
    if not record["drained"]:
        return "not drained (acks or deliveries missing after the drain window)"
    if record["lost_deliveries"]:
        return f"{record['lost_deliveries']} deliveries missing"
    if record["errors"]:
        return f"error frames {record['errors']}"
    if record["send_failed"]:
        return f"{record['send_failed']} sends on closed connections"
    if p99 is None or p99 != p99 or p99 > p99_limit_ms:
        return f"p99 send→recipient {p99} ms > {p99_limit_ms} ms"
    backlog = record.get("queues_during", {}).get("backlog", 0)
    if backlog > record["rate"] * 0.5:
        return f"broker backlog {backlog} messages during the step"
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
