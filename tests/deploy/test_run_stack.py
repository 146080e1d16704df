"""`make run`'s launcher over the real services: everything ready, the banner, then a clean stop."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_launcher import Stack, alive, wait_gone
from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "gateway", "store", "notifier")

pytestmark = pytest.mark.e2e


class Launcher(Stack):
    """The real launcher (python -m deploy.launcher) instead of the dummy stack."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.launcher", "--ready-timeout", "90", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._start_reader()


@pytest.fixture
def launched(common_env: dict[str, str]) -> Iterator[tuple[Launcher, dict[str, str]]]:
    missing = [s for s in SERVICES if importlib.util.find_spec(f"services.{s}.main") is None]
    if missing:
        pytest.skip(f"not written yet: {', '.join(f'services/{s}/main.py' for s in missing)}")
    ports = {f"{s.upper()}_PORT": str(free_port()) for s in SERVICES}
    env = {
        **{k: v for k, v in common_env.items() if not k.startswith("NOTIFIER_SMTP")},
        **ports,
        "SINK_SMTP_PORT": str(free_port()),
        "SINK_HTTP_PORT": str(free_port()),
        "ADMIN_USERNAME": "launcher-admin",
        "ADMIN_EMAIL": "launcher-admin@example.com",
        "ADMIN_PASSWORD": "",
    }
    launcher = Launcher(env, "--replicas", "store=2")
    try:
        yield launcher, env
    finally:
        launcher.kill()


def test_launcher_starts_every_service_prints_urls_and_stops_cleanly(
    launched: tuple[Launcher, dict[str, str]],
) -> None:
    launcher, env = launched
    launcher.wait_for("Ctrl-C stops everything", timeout=120)
    text = "\n".join(launcher.lines)
    assert f"http://127.0.0.1:{env['GATEWAY_PORT']}/" in text
    assert f"http://127.0.0.1:{env['AUTH_PORT']}/docs" in text
    assert f"http://127.0.0.1:{env['SINK_HTTP_PORT']}/" in text
    assert f"http://127.0.0.1:{env['NOTIFIER_PORT']}/dev/sms" in text
    # First run: the generated password appears once, in the banner, not in the log stream.
    banner_line = next(line for line in launcher.lines if "administrator" in line)
    password = banner_line.split("launcher-admin / ", 1)[1].strip()
    assert password and "(" not in password
    assert sum(password in line for line in launcher.lines) == 1

    store2 = str(int(env["STORE_PORT"]) + 10)
    for port in (env["AUTH_PORT"], env["GATEWAY_PORT"], env["STORE_PORT"], store2, env["NOTIFIER_PORT"]):
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{env['SINK_HTTP_PORT']}/healthz", timeout=5).status_code == 200
    assert any(line.startswith("launcher ") and "started store#2" in line for line in launcher.lines)

    pids = launcher.child_pids()
    assert len(pids) == 6 and all(alive(p) for p in pids)
    launcher.proc.send_signal(signal.SIGINT)
    assert launcher.finish(timeout=60) == 0
    assert wait_gone(pids) == []
