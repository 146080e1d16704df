"""W1 idle density: authenticated connections in steps; RSS per connection, idle CPU, handshakes/s."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bench.connections import Client, close_all, connect_many
from bench.context import Context
from bench.stats import summarize


async def run(ctx: Context) -> None:
    cfg = ctx.cfg.w1
    admins, users = await ctx.accounts()
    accounts = users + admins
    clients: list[Client] = []
    await asyncio.sleep(1.0)
    baseline_kb = ctx.gateway_rss_kb()
    ctx.log(f"W1: gateway RSS before connections {baseline_kb} KB")
    try:
        for level in cfg.levels:
            need = level - len(clients)
            if need <= 0:
                continue
            wanted = [accounts[(len(clients) + i) % len(accounts)] for i in range(need)]
            meter = await ctx.start_window()
            result = await connect_many(
                ctx.stack.ws_url,
                wanted,
                ctx.stack.origin,
                concurrency=cfg.handshake_concurrency,
                first_index=len(clients),
            )
            connect_window = await ctx.stop_window(meter)
            clients.extend(result.clients)
            opened = len(result.clients)
            gc.collect()
            await asyncio.sleep(1.0)
            rss_kb = ctx.gateway_rss_kb()
            meter = await ctx.start_window()
            await asyncio.sleep(cfg.idle_window_s)
            idle_window = await ctx.stop_window(meter)
            alive = sum(1 for c in clients if c.closed_code is None)
            gw_idle = idle_window.groups.get("gateway")
            gw_connect = connect_window.groups.get("gateway")
            connect = ctx.window_record(connect_window, opened)
            record: dict[str, Any] = {
                "workload": "W1",
                "kind": "level",
                "target": level,
                "open": alive,
                "failed": sum(result.failures.values()) + (len(clients) - alive),
                "failures": result.failures,
                "handshakes_per_s": round(opened / result.elapsed_s, 1) if result.elapsed_s else None,
                "handshake_ms": summarize([t * 1000.0 for t in result.handshake_s]),
                "gateway_cpu_ms_per_handshake": round(gw_connect.cpu_ms / opened, 3)
                if gw_connect and opened
                else None,
                "gateway_rss_kb": rss_kb,
                "gateway_baseline_rss_kb": baseline_kb,
                "rss_per_conn_kb": round((rss_kb - baseline_kb) / alive, 3) if alive else None,
                "idle": {
                    "window_s": round(idle_window.wall_s, 2),
                    "gateway_cores": round(gw_idle.cpu_ms / 1000.0 / idle_window.wall_s, 4)
                    if gw_idle
                    else None,
                    "window": idle_window.as_dict(None),
                },
                "connect": connect,
            }
            # The loader's share is judged over the handshake phase, where it works hardest.
            record["loader_cpu_cores"] = connect["loader_cpu_cores"]
            record["loader_flagged"] = connect["loader_flagged"]
            ctx.writer.write(record)
            idle_cores = record["idle"]["gateway_cores"]
            ctx.log(
                f"W1 {level}: open={alive} failed={record['failed']} "
                f"hs/s={record['handshakes_per_s']} rss/conn={record['rss_per_conn_kb']} KB "
                f"idle gw={idle_cores} cores"
            )
            if result.failures and not result.clients:
                break
    finally:
        await close_all(clients)
