"""W2 steady chat: fixed offered rates over the connected population; full latency breakdown."""

from __future__ import annotations

from bench.context import Context
from bench.workloads.chat import describe, measured_step, open_session, settle


async def run(ctx: Context) -> None:
    cfg = ctx.cfg.w2
    session = await open_session(ctx, tap=True)
    try:
        if cfg.warmup_s > 0:
            plan = session.engine.plan(cfg.warmup_rate, cfg.warmup_s, ctx.rng)
            await session.engine.run(plan)
            await session.engine.drain(plan.step, cfg.drain_s)
        for rate in cfg.rates:
            record = await measured_step(ctx, session, "W2", rate, cfg.duration_s, cfg.drain_s)
            record["settle_s"] = round(await settle(ctx, session, len(session.engine.steps) - 1), 1)
            ctx.writer.write(record)
            ctx.log("W2 " + describe(record))
    finally:
        await session.close()
