"""The launcher: its plan (ports, replicas) and its supervision of real child processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.launcher import Admin, ProcessSpec, banner, parse_replicas, plan
from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, "-m", "tests.deploy.dummy_stack"]


# --- the plan -------------------------------------------------------------------------------------


def test_replica_spec_parses_counts_per_service() -> None:
    assert parse_replicas("store=2, gateway=3") == {"store": 2, "gateway": 3}
    assert parse_replicas("") == {}


@pytest.mark.parametrize("text", ["store", "db=2", "store=0", "store=two"])
def test_bad_replica_spec_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="replica"):
        parse_replicas(text)


def test_default_plan_starts_sink_and_four_services_on_their_ports() -> None:
    specs = plan(env={}, python="py")
    assert [s.name for s in specs] == ["mail", "auth", "store", "notifier", "gateway"]
    ready = {s.name: s.ready_url for s in specs}
    assert ready == {
        "mail": "http://127.0.0.1:8025/healthz",
        "auth": "http://127.0.0.1:8001/readyz",
        "store": "http://127.0.0.1:8002/readyz",
        "notifier": "http://127.0.0.1:8003/readyz",
        "gateway": "http://127.0.0.1:8000/readyz",
    }
    auth = next(s for s in specs if s.name == "auth")
    assert auth.argv == ("py", "-m", "services.auth.main")
    # Default ports: nothing derived, so the web client keeps the browser's own host name.
    assert dict(auth.env) == {"AUTH_PORT": "8001"}


def test_replicas_get_their_own_ports_offset_by_the_step() -> None:
    specs = plan(env={}, python="py", replicas={"store": 2, "gateway": 2}, sink=False)
    ports = {s.name: s.env[f"{s.service.upper()}_PORT"] for s in specs if s.service}
    assert ports == {
        "auth": "8001",
        "store#1": "8002",
        "store#2": "8012",
        "notifier": "8003",
        "gateway#1": "8000",
        "gateway#2": "8010",
    }


def test_colliding_replica_ports_are_refused() -> None:
    with pytest.raises(ValueError, match="collide"):
        plan(env={}, replicas={"gateway": 2}, port_step=1)


def test_moved_ports_are_passed_to_the_services_that_call_them() -> None:
    env = {"AUTH_PORT": "9101", "NOTIFIER_PORT": "9103", "SINK_SMTP_PORT": "9125", "SINK_HTTP_PORT": "9126"}
    specs = {s.name: s for s in plan(env=env, python="py")}
    assert specs["store"].env["CHAT_JWKS_URL"] == "http://127.0.0.1:9101/.well-known/jwks.json"
    assert specs["notifier"].env["NOTIFIER_SMTP_PORT"] == "9125"
    assert specs["gateway"].env["WEB_MAIL_INBOX_URL"] == "http://127.0.0.1:9126/"
    assert specs["gateway"].env["WEB_SMS_INBOX_URL"] == "http://127.0.0.1:9103/dev/sms"
    assert specs["mail"].argv[-4:] == ("--smtp-port", "9125", "--http-port", "9126")


def test_gateway_replicas_pages_are_allowed_origins_everywhere() -> None:
    specs = plan(env={}, python="py", replicas={"gateway": 2})
    for spec in specs:
        if spec.service:
            origins = spec.env["CHAT_ALLOWED_ORIGINS"].split(",")
            assert {"http://127.0.0.1:8000", "http://127.0.0.1:8010", "http://localhost:8010"} <= set(origins)
    mine = plan(env={"CHAT_ALLOWED_ORIGINS": "https://app.example"}, python="py", replicas={"gateway": 2})
    assert all("CHAT_ALLOWED_ORIGINS" not in s.env for s in mine)


def test_default_origins_match_the_shared_settings() -> None:
    from deploy.launcher import DEFAULT_ORIGINS
    from shared.settings import CommonSettings

    assert list(DEFAULT_ORIGINS) == CommonSettings.model_fields["allowed_origins"].default_factory()  # type: ignore[call-arg,misc]


def test_banner_shows_every_url_and_the_generated_password() -> None:
    specs = plan(env={}, python="py")
    text = banner(specs, Admin("admin", "admin@example.com", "s3cret-pass", created=True))
    for url in (
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8001/docs",
        "http://127.0.0.1:8025/",
        "http://127.0.0.1:8003/dev/sms",
    ):
        assert url in text
    assert "admin / s3cret-pass" in text
    existing = banner(specs, Admin("admin", "admin@example.com", None, created=False))
    assert "password printed when the account was created" in existing


# --- supervision of real processes -----------------------------------------------------------------


class Stack:
    """The dummy stack in a subprocess, its output collected line by line."""

    def __init__(self, entries: list[tuple[str, int, list[str]]], stop_timeout: float = 5.0) -> None:
        self.proc = subprocess.Popen(
            [*STACK, json.dumps(entries), str(stop_timeout)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._start_reader()

    def _start_reader(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            self.lines.append(item)
            if text in item:
                return item
        raise AssertionError(f"{text!r} never appeared:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def child_pids(self) -> list[int]:
        return [int(line.split("(pid ")[1].split(")")[0]) for line in self.lines if "(pid " in line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.kill()


def test_sigint_stops_every_child_and_grandchild_and_exits_zero(stacks: list[Stack], tmp_path: Path) -> None:
    grandchild = tmp_path / "grandchild.pid"
    stack = Stack([("alpha", free_port(), ["--grandchild", str(grandchild)]), ("beta", free_port(), [])])
    stacks.append(stack)
    stack.wait_for("STACK READY")
    pids = [*stack.child_pids(), int(grandchild.read_text())]
    assert len(pids) == 3 and all(alive(p) for p in pids)

    stack.proc.send_signal(signal.SIGINT)

    assert stack.finish() == 0
    assert wait_gone(pids) == []
    assert any("all processes stopped" in line for line in stack.lines)


def test_output_is_prefixed_per_process_and_colour_free(stacks: list[Stack]) -> None:
    stack = Stack([("alpha", free_port(), []), ("beta-long", free_port(), [])])
    stacks.append(stack)
    stack.wait_for("STACK READY")
    line = stack.wait_for("dummy_started")
    assert line.startswith(("alpha     | ", "beta-long | "))
    assert "\x1b" not in "\n".join(stack.lines)
    assert stack.wait_for("all 2 processes ready")
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.finish() == 0


def test_a_child_that_dies_stops_the_rest_and_fails_the_launcher(stacks: list[Stack]) -> None:
    stack = Stack([("steady", free_port(), []), ("crasher", free_port(), ["--crash-after", "1.0"])])
    stacks.append(stack)
    stack.wait_for("STACK READY")
    pids = stack.child_pids()

    assert stack.finish() == 1
    assert any("crasher exited with code 3" in line for line in stack.lines)
    assert wait_gone(pids) == []


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(stacks: list[Stack]) -> None:
    stack = Stack([("stubborn", free_port(), ["--ignore-term"])], stop_timeout=1.0)
    stacks.append(stack)
    stack.wait_for("STACK READY")
    pids = stack.child_pids()
    stack.proc.send_signal(signal.SIGTERM)

    assert stack.finish() == 0
    assert any("ignored SIGTERM" in line for line in stack.lines)
    assert wait_gone(pids) == []


def test_a_child_that_never_gets_ready_fails_the_launcher(stacks: list[Stack]) -> None:
    stack = Stack([("slow", free_port(), ["--ready-after", "600"])])
    stacks.append(stack)
    stack.wait_for("started slow")
    pids = stack.child_pids()
    # ready_timeout is 20 s in dummy_stack; a crash-free child that stays red must not pass as ready.
    stack.proc.send_signal(signal.SIGINT)
    assert stack.finish() == 0
    assert not any("STACK READY" in line for line in stack.lines)
    assert wait_gone(pids) == []


def test_children_die_with_a_launcher_that_is_killed_outright(stacks: list[Stack]) -> None:
    stack = Stack([("orphan", free_port(), [])])
    stacks.append(stack)
    stack.wait_for("STACK READY")
    pids = stack.child_pids()

    stack.proc.kill()
    stack.proc.wait(5)

    assert wait_gone(pids) == []


def test_dry_run_prints_the_plan_without_starting_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.launcher", "--dry-run", "--replicas", "store=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "store#2" in result.stdout and "8012" in result.stdout


def test_a_port_already_in_use_is_reported_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "deploy.launcher", "--no-sink", "--services", "store"],
            cwd=ROOT,
            env={**os.environ, "STORE_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"ports already in use: store:{port}" in result.stdout
    assert "started" not in result.stdout


def test_process_spec_defaults_are_empty() -> None:
    spec = ProcessSpec(name="x", argv=("true",))
    assert dict(spec.env) == {} and spec.ready_url is None
