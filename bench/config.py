"""Workload parameters: the full run (the issue's numbers), ``--quick`` and ``--smoke`` (tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class W1Config:
    levels: list[int] = field(default_factory=lambda: [1000, 5000, 10000, 15000])
    handshake_concurrency: int = 64
    idle_window_s: float = 10.0


@dataclass
class ChatConfig:
    """Population shared by W2 and W3."""

    users: int = 1000
    admins: int = 20
    connections: int = 2000  # admins get one each, users share the rest (most get two devices)


@dataclass
class W2Config:
    rates: list[float] = field(default_factory=lambda: [50.0, 100.0, 200.0, 400.0])
    duration_s: float = 30.0
    warmup_rate: float = 50.0
    warmup_s: float = 5.0
    drain_s: float = 10.0


W3_LOW_STEPS = (50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0, 800.0)


@dataclass
class W3Config:
    # Fine steps low down (where this machine is today), coarse ones up to the targets.
    rates: list[float] = field(
        default_factory=lambda: [*W3_LOW_STEPS, 1000.0, 1200.0, 1500.0, 1800.0, 2200.0]
    )
    duration_s: float = 20.0
    drain_s: float = 10.0
    p99_limit_ms: float = 100.0
    tap: bool = False  # the event tap costs loader CPU; W2 already measures send→event


@dataclass
class W4Config:
    recipients: int = 1000
    rate: float = 250.0
    grace_window_s: float = 2.0
    wait_s: float = 60.0  # after the last send, how long to wait for emails


@dataclass
class BenchConfig:
    name: str = "full"
    w1: W1Config = field(default_factory=W1Config)
    chat: ChatConfig = field(default_factory=ChatConfig)
    w2: W2Config = field(default_factory=W2Config)
    w3: W3Config = field(default_factory=W3Config)
    w4: W4Config = field(default_factory=W4Config)
    loader_cpu_limit_cores: float = 0.25
    seed: int = 7


def full() -> BenchConfig:
    return BenchConfig()


def quick() -> BenchConfig:
    """Minutes instead of half an hour: the same shape at smaller sizes."""
    return BenchConfig(
        name="quick",
        w1=W1Config(levels=[500, 2000], idle_window_s=5.0),
        chat=ChatConfig(users=200, admins=10, connections=400),
        w2=W2Config(rates=[50.0, 200.0], duration_s=10.0, warmup_s=3.0),
        w3=W3Config(rates=[50.0, 100.0, 200.0, 400.0, 800.0, 1200.0, 1600.0], duration_s=8.0),
        w4=W4Config(recipients=200, rate=200.0, wait_s=30.0),
    )


def smoke() -> BenchConfig:
    """Seconds: a few connections and messages, to prove the harness end to end (tests/bench)."""
    return BenchConfig(
        name="smoke",
        w1=W1Config(levels=[4, 8], handshake_concurrency=4, idle_window_s=0.5),
        chat=ChatConfig(users=3, admins=2, connections=8),
        w2=W2Config(rates=[20.0], duration_s=1.5, warmup_rate=10.0, warmup_s=0.5, drain_s=10.0),
        w3=W3Config(rates=[20.0, 40.0], duration_s=1.0, drain_s=10.0),
        w4=W4Config(recipients=3, rate=10.0, grace_window_s=0.5, wait_s=30.0),
    )


PRESETS = {"full": full, "quick": quick, "smoke": smoke}
