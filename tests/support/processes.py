"""Start real service processes on loopback ports and wait until their /readyz is green."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "tests" / "artifacts" / "logs"


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}-{self.port}.log"
        # The child keeps its own copy of the descriptor; closing ours avoids a ResourceWarning.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name.split('#')[0]}.main"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}")
                try:
                    if (await client.get(f"{self.url}/readyz", timeout=1.0)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def terminate(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Like ``stop`` without blocking the loop (proxies in this process must keep forwarding)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service(name: str, env: dict[str, str], port: int | None = None) -> ServiceProcess:
    """A service process; ``name`` may carry a replica suffix (``store#2``)."""
    port = port or free_port()
    prefix = name.split("#")[0].upper()
    return ServiceProcess(name=name, port=port, env={**env, f"{prefix}_PORT": str(port)})
