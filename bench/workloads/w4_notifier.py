"""W4 notifier: messages to recipients who are offline; time to the email minus the grace window.

Each recipient is a user created by an administrator with a verified email who
never connects; their administrator (connected) sends one message into each
consultation at a fixed rate. The SMTP sink (own process, same clock) reports
every arrival; one email per recipient is expected.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import api
from bench.connections import close_all, connect_many
from bench.context import Context
from bench.engine import ChatEngine
from bench.model import Conversation
from bench.stats import summarize


async def run(ctx: Context) -> None:
    cfg = ctx.cfg.w4
    if ctx.sink is None:
        ctx.log("W4 skipped: no SMTP sink (a running stack's notifier must point at --smtp-port)")
        return
    if ctx.stack.grace_window_s is None:
        ctx.log("W4 skipped: the grace window of the running notifier is unknown (--grace-window)")
        return
    admins = await ctx.admins()
    ctx.log(f"W4: creating {cfg.recipients} offline recipients with verified emails")
    recipients = await api.make_offline_users(ctx.api, admins[0], ctx.tag, cfg.recipients)
    convs: list[Conversation] = await api.open_conversations(ctx.api, recipients, admins, ctx.tag + "w4")
    admin_conns = await connect_many(ctx.stack.ws_url, admins, ctx.stack.origin, concurrency=16)
    engine = ChatEngine(convs, admin_conns.clients, tag=f"{ctx.tag}w4")
    by_email = {c.user.email: c for c in convs if c.user.email}
    gap = 1.0 / cfg.rate
    sends = [(i * gap, conv, conv.admin) for i, conv in enumerate(convs)]
    plan = engine.plan_sends(sends, cfg.rate, len(sends) * gap, ctx.rng)
    idx_of = {conv.conversation_id: plan.idx[i] for i, conv in enumerate(convs)}
    first_mail = len(ctx.sink.mails)
    await ctx.settle_queues(time.monotonic() + 60.0)  # the setup's 2,000 events are not W4's load
    await asyncio.sleep(1.0)
    try:
        meter = await ctx.start_window()
        await engine.run(plan)
        deadline = time.monotonic() + cfg.grace_window_s + cfg.wait_s
        while time.monotonic() < deadline:
            mine = [m for m in ctx.sink.mails[first_mail:] if any(r in by_email for r in m.rcpt)]
            if len({r for m in mine for r in m.rcpt}) >= len(convs):
                break
            await asyncio.sleep(0.1)
        window = await ctx.stop_window(meter)
    finally:
        await close_all(admin_conns.clients)
    mails = ctx.sink.mails[first_mail:]
    extra: list[float] = []
    by_second: dict[int, list[float]] = {}  # by the second of the send: where the tail comes from
    start = min(engine.sched[i] for i in idx_of.values())
    seen: dict[str, int] = {}
    arrivals: list[float] = []
    others = 0
    for mail in mails:
        matched = [r for r in mail.rcpt if r in by_email]
        if not matched:
            others += 1
            continue
        for rcpt in matched:
            seen[rcpt] = seen.get(rcpt, 0) + 1
            if seen[rcpt] > 1:
                continue
            conv = by_email[rcpt]
            sched = engine.sched[idx_of[conv.conversation_id]]
            extra.append((mail.t - sched - cfg.grace_window_s) * 1000.0)
            by_second.setdefault(int(sched - start), []).append(extra[-1])
            arrivals.append(mail.t)
    arrivals.sort()
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    step = engine.steps[plan.step]
    record: dict[str, Any] = {
        "workload": "W4",
        "kind": "result",
        "messages": step.sent,
        "acked": step.acked,
        "send_errors": dict(step.errors),
        "recipients": len(convs),
        "emails": len(seen),
        "duplicates": sum(n - 1 for n in seen.values()),
        "other_emails": others,
        "grace_window_s": cfg.grace_window_s,
        "offered_rate": cfg.rate,
        "extra_latency_ms": summarize(extra),
        "extra_latency_by_send_second_ms": {str(k): summarize(v) for k, v in sorted(by_second.items())},
        "emails_per_s": round((len(arrivals) - 1) / span, 1) if span > 0 else None,
        "send_to_ack_ms": step.ack.summary(),
    }
    record.update(ctx.window_record(window, step.sent))
    ctx.writer.write(record)
    ctx.log(
        f"W4 emails={record['emails']}/{record['recipients']} dup={record['duplicates']} "
        f"extra p50={record['extra_latency_ms']['p50']} p99={record['extra_latency_ms']['p99']} ms "
        f"rate={record['emails_per_s']}/s"
    )
