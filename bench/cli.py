"""Command line: ``python -m bench [--quick|--smoke] [--workloads W1,W2,W3,W4] [--url ...]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import resource
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from bench import api
from bench.brokerstats import dead_letter_reasons
from bench.config import PRESETS, BenchConfig
from bench.context import Context
from bench.procstat import system_cpu_ticks
from bench.report import ResultWriter, machine
from bench.sink import SinkProcess
from bench.stack import LocalStack, Stack, StackConfig, running_stack
from bench.workloads import w1_idle, w2_steady, w3_capacity, w4_notifier

Workload = Callable[[Context], Awaitable[None]]
# W4 runs before the chat workloads so nothing they leave pending in the notifier competes with it.
ORDER: tuple[tuple[str, Workload], ...] = (
    ("W1", w1_idle.run),
    ("W4", w4_notifier.run),
    ("W2", w2_steady.run),
    ("W3", w3_capacity.run),
)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the consultation chat.")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes")
    preset.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the test suite uses it)")
    p.add_argument("--workloads", default="W1,W2,W3,W4", help="comma-separated subset of W1,W2,W3,W4")
    p.add_argument("--out", type=Path, help="results directory (default bench/results/<time>-<preset>)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--render", type=Path, metavar="DIR", help="only re-render summary.md and the plot of DIR")
    p.add_argument("--w1-levels", help="e.g. 1000,5000,10000,15000")
    p.add_argument("--w2-rates", help="e.g. 50,100,200,400")
    p.add_argument("--w3-rates", help="e.g. 400,800,1200")
    p.add_argument("--duration", type=float, help="seconds per W2/W3 step")
    p.add_argument("--users", type=int, help="W2/W3 users")
    p.add_argument("--connections", type=int, help="W2/W3 connections")
    p.add_argument("--w4-recipients", type=int)
    p.add_argument("--w4-rate", type=float)
    p.add_argument("--grace-window", type=float, help="notifier grace window in seconds")
    running = p.add_argument_group("a running stack (nothing is started or removed)")
    running.add_argument("--url", help="gateway base URL, e.g. http://127.0.0.1:8000")
    running.add_argument("--auth-url", default="http://127.0.0.1:8001")
    running.add_argument(
        "--amqp-url", default=os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    running.add_argument(
        "--database-url",
        default=os.environ.get("CHAT_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/chat"),
    )
    running.add_argument("--origin", default="http://localhost:3000", help="an allowed Origin")
    running.add_argument("--smtp-port", type=int, help="start the SMTP sink on this port (the notifier's)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    cfg = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]()
    cfg.seed = args.seed
    if args.w1_levels:
        cfg.w1.levels = [int(x) for x in _floats(args.w1_levels)]
    if args.w2_rates:
        cfg.w2.rates = _floats(args.w2_rates)
    if args.w3_rates:
        cfg.w3.rates = _floats(args.w3_rates)
    if args.duration:
        cfg.w2.duration_s = cfg.w3.duration_s = args.duration
    if args.users:
        cfg.chat.users = args.users
    if args.connections:
        cfg.chat.connections = args.connections
    if args.w4_recipients:
        cfg.w4.recipients = args.w4_recipients
    if args.w4_rate:
        cfg.w4.rate = args.w4_rate
    if args.grace_window is not None:
        cfg.w4.grace_window_s = args.grace_window
    return cfg


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it: the gateway needs it too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def background_load(seconds: float = 2.0) -> float:
    """Cores the machine spends while the stack is idle (other users, other test runs)."""
    busy0, total0 = system_cpu_ticks()
    await asyncio.sleep(seconds)
    busy1, total1 = system_cpu_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


async def run_workloads(ctx: Context, selected: list[str]) -> list[str]:
    failed: list[str] = []
    for name, workload in ORDER:
        if name not in selected:
            continue
        ctx.log(f"=== {name} ===")
        try:
            await workload(ctx)
        except Exception as exc:  # one broken workload must not lose the others' results
            failed.append(name)
            ctx.log(f"{name} failed: {type(exc).__name__}: {exc}")
            ctx.writer.write({"workload": name, "kind": "failure", "error": f"{type(exc).__name__}: {exc}"})
    return failed


async def amain(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    selected = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = set(selected) - {name for name, _ in ORDER}
    if unknown:
        print(f"unknown workloads: {sorted(unknown)}", file=sys.stderr)
        return 2
    fd_limit = raise_fd_limit()
    writer = ResultWriter(args.out, cfg.name)
    tag = f"b{random.Random().randrange(36**5):x}"
    sink: SinkProcess | None = None
    need_sink = "W4" in selected and (args.url is None or args.smtp_port is not None)
    if need_sink:
        sink = SinkProcess(port=args.smtp_port) if args.smtp_port else SinkProcess()
        await sink.start()
    failed: list[str] = []
    try:
        if args.url:
            stack = running_stack(
                gateway_url=args.url,
                auth_url=args.auth_url,
                amqp_url=args.amqp_url,
                database_url=args.database_url,
                origin=args.origin,
                grace_window_s=args.grace_window,
            )
            failed = await _run(stack, cfg, writer, tag, sink, selected, fd_limit, "running")
        else:
            local = LocalStack(StackConfig(grace_window_s=cfg.w4.grace_window_s), sink.port if sink else None)
            print(f"[bench] starting the stack (database and vhost {local.name})", flush=True)
            async with local as stack:
                failed = await _run(stack, cfg, writer, tag, sink, selected, fd_limit, "local")
    finally:
        if sink is not None:
            await sink.stop()
        summary, plot = writer.finish()
        print(
            f"[bench] results in {writer.dir} (summary {summary.name}{', plot ' + plot.name if plot else ''})"
        )
    return 1 if failed else 0


async def _run(
    stack: Stack,
    cfg: BenchConfig,
    writer: ResultWriter,
    tag: str,
    sink: SinkProcess | None,
    selected: list[str],
    fd_limit: int,
    mode: str,
) -> list[str]:
    client = api.Api(stack)
    background = await background_load()
    if background > 0.2:
        print(
            f"[bench] warning: the machine is already busy ({background:.2f} cores) before the run",
            flush=True,
        )
    ctx = Context(
        stack=stack, cfg=cfg, writer=writer, api=client, tag=tag, sink=sink, rng=random.Random(cfg.seed)
    )
    writer.write(
        {
            "kind": "meta",
            "preset": cfg.name,
            "stack": mode,
            "workloads": selected,
            "machine": machine(),
            "git": git_revision(),
            "fd_limit": fd_limit,
            # Cores busy before any load: other work on the machine skews every figure of this run.
            "background_busy_cores": round(background, 3),
            "gateway": stack.gateway_url,
            "config": dataclasses.asdict(cfg),
            "service_env": {k: v for k, v in stack.env.items() if not k.endswith("_URL")},
            "service_logs": {name: str(p.log_path) for name, p in stack.processes.items()},
        }
    )
    try:
        failed = await run_workloads(ctx, selected)
        try:
            dead = await dead_letter_reasons(stack.amqp_url, f"{stack.amqp_prefix}.dead")
        except Exception as exc:  # a diagnostic only
            dead = {"unavailable": 0}
            ctx.log(f"dead-letter peek failed: {exc}")
        writer.write({"kind": "dead_letters", "reasons": dead, "total": sum(dead.values())})
        if dead:
            ctx.log(f"dead letters: {dead}")
        return failed
    finally:
        await client.close()
        await stack.close()


def rerender(directory: Path) -> int:
    """Rebuild summary.md and latency.png from an existing results.jsonl."""
    writer = ResultWriter(directory, "render")
    writer.records = [orjson.loads(line) for line in writer.jsonl.read_bytes().splitlines() if line.strip()]
    summary, plot = writer.finish(link_latest=False)
    print(f"[bench] rendered {summary}{' and ' + str(plot) if plot else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return rerender(args.render)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))
