"""Run the whole stack on one machine under one process: the four services, replicas and the mail sink.

``python -m deploy.launcher`` (what ``make run`` calls) ensures the administrator,
starts every process with asyncio, prefixes each output line with the process name,
waits until every ``/readyz`` answers 200, prints the URLs, and on Ctrl-C or SIGTERM
stops every child (SIGTERM to its process group, SIGKILL after a grace period) so
nothing is left behind. When one child dies, everything stops: a half-running stack
only hides the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

import httpx

# Base ports; replica i (0-based) of a service listens on base + i * port_step.
SERVICES: dict[str, int] = {"gateway": 8000, "auth": 8001, "store": 8002, "notifier": 8003}
START_ORDER = ("auth", "store", "notifier", "gateway")
SINK_SMTP_PORT = 1025
SINK_HTTP_PORT = 8025
DEFAULT_PORT_STEP = 10
_DEFAULT_PORTS = {**SERVICES, "mail": SINK_HTTP_PORT}
DEFAULT_ORIGINS = ("http://localhost:8000", "http://127.0.0.1:8000", "http://localhost:3000")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessSpec:
    """One child process: its log prefix, command, extra environment and readiness probe."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    base_url: str | None = None
    service: str | None = None


def parse_replicas(text: str) -> dict[str, int]:
    """``"store=2,gateway=3"`` -> ``{"store": 2, "gateway": 3}``; unknown names and counts < 1 are errors."""
    replicas: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        name = name.strip()
        if not sep or name not in SERVICES:
            raise ValueError(f"bad replica spec {part!r}: use NAME=COUNT with NAME in {', '.join(SERVICES)}")
        try:
            value = int(count)
        except ValueError:
            raise ValueError(f"bad replica count in {part!r}") from None
        if value < 1:
            raise ValueError(f"replica count must be >= 1 in {part!r}")
        replicas[name] = value
    return replicas


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host


def plan(
    *,
    env: Mapping[str, str],
    python: str = sys.executable,
    services: Sequence[str] = START_ORDER,
    replicas: Mapping[str, int] | None = None,
    port_step: int = DEFAULT_PORT_STEP,
    sink: bool = True,
) -> list[ProcessSpec]:
    """Every process to start, in start order, with a distinct port per replica."""
    replicas = replicas or {}
    specs: list[ProcessSpec] = []
    if sink:
        smtp_port = int(env.get("SINK_SMTP_PORT", SINK_SMTP_PORT))
        http_port = int(env.get("SINK_HTTP_PORT", SINK_HTTP_PORT))
        url = f"http://127.0.0.1:{http_port}"
        specs.append(
            ProcessSpec(
                name="mail",
                argv=(
                    python,
                    "-m",
                    "deploy.smtp_sink",
                    "--smtp-port",
                    str(smtp_port),
                    "--http-port",
                    str(http_port),
                ),
                ready_url=f"{url}/healthz",
                base_url=f"{url}/",
            )
        )
    for service in START_ORDER:
        if service not in services:
            continue
        prefix = service.upper()
        base = int(env.get(f"{prefix}_PORT", SERVICES[service]))
        host = _probe_host(env.get(f"{prefix}_HOST", "127.0.0.1"))
        count = replicas.get(service, 1)
        for index in range(count):
            port = base + index * port_step
            url = f"http://{host}:{port}"
            specs.append(
                ProcessSpec(
                    name=service if count == 1 else f"{service}#{index + 1}",
                    argv=(python, "-m", f"services.{service}.main"),
                    env={f"{prefix}_PORT": str(port)},
                    ready_url=f"{url}/readyz",
                    base_url=url,
                    service=service,
                )
            )
    ports = [spec.ready_url.rsplit(":", 1)[1].split("/")[0] for spec in specs if spec.ready_url]
    if len(ports) != len(set(ports)):
        raise ValueError(f"replica ports collide ({', '.join(ports)}): raise --port-step")
    return [replace(spec, env={**_derived_env(specs, env, spec.service), **spec.env}) for spec in specs]


def _derived_env(specs: Sequence[ProcessSpec], env: Mapping[str, str], service: str | None) -> dict[str, str]:
    """Point the services at each other's ports when those are not the defaults the code assumes.

    Nothing is set that the environment already sets; with default ports nothing is set at all,
    so the web client keeps using the host name the browser used (localhost or 127.0.0.1).
    """
    first = {s.service or s.name: s.base_url for s in reversed(specs) if s.base_url}
    moved = {n: u for n, u in first.items() if u and not u.rstrip("/").endswith(f":{_DEFAULT_PORTS[n]}")}
    derived: dict[str, str] = {}
    if service is None:
        return derived
    if "auth" in moved and "CHAT_JWKS_URL" not in env:
        derived["CHAT_JWKS_URL"] = f"{moved['auth']}/.well-known/jwks.json"
    # The web client served by a gateway on another port is another origin: allow it.
    pages = [s.base_url for s in specs if s.service == "gateway" and s.base_url]
    if "CHAT_ALLOWED_ORIGINS" not in env and any(not p.endswith(":8000") for p in pages):
        origins = list(DEFAULT_ORIGINS)
        for page in pages:
            port = page.rsplit(":", 1)[1]
            origins += [
                o for o in (f"http://127.0.0.1:{port}", f"http://localhost:{port}") if o not in origins
            ]
        derived["CHAT_ALLOWED_ORIGINS"] = ",".join(origins)
    if service == "gateway":
        if "mail" in moved and "WEB_MAIL_INBOX_URL" not in env:
            derived["WEB_MAIL_INBOX_URL"] = str(moved["mail"])
        if "notifier" in moved and "WEB_SMS_INBOX_URL" not in env:
            derived["WEB_SMS_INBOX_URL"] = f"{moved['notifier']}/dev/sms"
    smtp_port = int(env.get("SINK_SMTP_PORT", SINK_SMTP_PORT))
    if (
        service == "notifier"
        and "mail" in first
        and smtp_port != SINK_SMTP_PORT
        and "NOTIFIER_SMTP_PORT" not in env
    ):
        derived["NOTIFIER_SMTP_HOST"] = "127.0.0.1"
        derived["NOTIFIER_SMTP_PORT"] = str(smtp_port)
    return derived


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the launcher dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None] | None = None  # copies the child's output, prefixed, to ours
    ready: bool = False


class Supervisor:
    """Start, watch and stop a set of child processes; write their output as ``name | line``."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        out: TextIO = sys.stdout,
        ready_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.specs = list(specs)
        self.out = out
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.width = max([len(s.name) for s in self.specs] + [len("launcher")])
        self.children: list[Child] = []
        self._stop = asyncio.Event()
        self._signals = 0

    def say(self, name: str, line: str) -> None:
        """Write one prefixed, colour-free line; a closed stdout must not kill the supervisor."""
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.out.write(f"{name.ljust(self.width)} | {_ANSI.sub('', line)}\n")
            self.out.flush()

    def log(self, line: str) -> None:
        self.say("launcher", line)

    async def run(self, on_ready: Callable[[list[ProcessSpec]], None] | None = None) -> int:
        """Run until a signal (exit 0) or until a child dies or readiness fails (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        code = 1
        try:
            for spec in self.specs:
                await self._start(spec)
            started = time.monotonic()
            outcome = await self._wait_ready()
            if outcome == "ready":
                self.log(f"all {len(self.children)} processes ready in {time.monotonic() - started:.1f} s")
                if on_ready is not None:
                    on_ready(self.specs)
                outcome = await self._wait_stop_or_death()
            code = 0 if outcome == "signal" else 1
        finally:
            await self.stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return code

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log(f"received {signal.Signals(sig).name}: stopping everything (again to kill at once)")
            self._stop.set()
        else:
            self.log("second signal: killing every process now")
            for child in self.children:
                self._signal_group(child, signal.SIGKILL)

    async def _start(self, spec: ProcessSpec) -> None:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only the launcher, which stops children in order
            preexec_fn=_die_with_parent,
            limit=1 << 20,
        )
        child = Child(spec=spec, proc=proc)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        self.log(f"started {spec.name} (pid {proc.pid}): {' '.join(spec.argv[1:])}")

    async def _pump(self, child: Child) -> None:
        stream = child.proc.stdout
        assert stream is not None
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: emit what is buffered
                raw = await stream.read(1 << 20)
            if not raw:
                return
            self.say(child.spec.name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _dead(self) -> list[Child]:
        return [c for c in self.children if c.proc.returncode is not None]

    async def _wait_ready(self) -> str:
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if self._stop.is_set():
                    return "signal"
                if dead := self._dead():
                    await self._report_dead(dead)
                    return "died"
                pending = [c for c in self.children if not c.ready]
                if not pending:
                    return "ready"
                if time.monotonic() > deadline:
                    for child in pending:
                        url = child.spec.ready_url
                        self.log(f"{child.spec.name} not ready after {self.ready_timeout:.0f} s ({url})")
                    return "timeout"
                results = await asyncio.gather(*(self._probe(client, c) for c in pending))
                for child, ok in zip(pending, results, strict=True):
                    if ok:
                        child.ready = True
                        self.log(f"{child.spec.name} ready")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.25)

    @staticmethod
    async def _probe(client: httpx.AsyncClient, child: Child) -> bool:
        if child.spec.ready_url is None:
            return True
        try:
            return (await client.get(child.spec.ready_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_stop_or_death(self) -> str:
        stop = asyncio.create_task(self._stop.wait())
        deaths = {asyncio.create_task(c.proc.wait()): c for c in self.children}
        done, _ = await asyncio.wait({stop, *deaths}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *deaths):
            task.cancel()
        if stop in done:
            return "signal"
        await self._report_dead([deaths[t] for t in done if t in deaths])
        return "died"

    async def _report_dead(self, dead: list[Child]) -> None:
        for child in dead:
            if child.pump is not None:  # let its last words (a traceback) come out first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child.pump), 1.0)
            self.log(f"{child.spec.name} exited with code {child.proc.returncode}: stopping everything")

    @staticmethod
    def _signal_group(child: Child, sig: int) -> None:
        if child.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)

    async def stop_all(self) -> None:
        """SIGTERM each live child's process group (reverse start order); SIGKILL what outlives the grace."""
        live = [c for c in reversed(self.children) if c.proc.returncode is None]
        for child in live:
            self._signal_group(child, signal.SIGTERM)
        if live:
            _, pending = await asyncio.wait(
                [asyncio.create_task(c.proc.wait()) for c in live], timeout=self.stop_timeout
            )
            for task in pending:
                task.cancel()
            for child in live:
                if child.proc.returncode is None:
                    self.log(f"{child.spec.name} ignored SIGTERM for {self.stop_timeout:.0f} s: killing it")
                    self._signal_group(child, signal.SIGKILL)
                    await child.proc.wait()
        for child in self.children:
            # Anything the child left in its own process group (it was the group leader) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            if child.pump is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.pump, 2.0)
        if live:
            self.log("all processes stopped")


# --- the administrator -------------------------------------------------------------------------

_PASSWORD_RE = re.compile(r"password\s*[:=]\s*(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Admin:
    username: str
    email: str
    password: str | None  # None: the account already existed and no ADMIN_PASSWORD was given
    created: bool = False

    def credentials(self) -> str:
        """What the banner shows: a password only when this run knows it."""
        if self.created and self.password:
            return f"{self.username} / {self.password}"
        if self.password:
            return f"{self.username} / {self.password} (ADMIN_PASSWORD; the account already existed)"
        return f"{self.username} / (password printed when the account was created)"


def ensure_admin(
    env: Mapping[str, str], say: Callable[[str], None], python: str = sys.executable
) -> Admin | None:
    """Create the administrator on first run (auth's CLI prints a generated password once)."""
    username = env.get("ADMIN_USERNAME") or "admin"
    email = env.get("ADMIN_EMAIL") or "admin@example.com"
    password = env.get("ADMIN_PASSWORD") or None
    argv = [python, "-m", "services.auth.cli", "ensure-admin", "--username", username, "--email", email]
    if password:
        argv += ["--password", password]
    try:
        result = subprocess.run(
            argv,
            env={**env, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        say("ensure-admin timed out after 120 s")
        return None
    generated: str | None = None
    created = "created admin" in result.stdout
    for line in (result.stdout + result.stderr).splitlines():
        match = _PASSWORD_RE.search(line)
        if match and not password:
            generated = match.group(1).strip("'\"")
            line = line.replace(generated, "*" * 8)  # shown once, in the banner, not in the log stream
        say(line)
    if result.returncode != 0:
        say(f"ensure-admin failed with code {result.returncode}")
        return None
    return Admin(username=username, email=email, password=password or generated, created=created)


# --- the banner ---------------------------------------------------------------------------------


def banner(specs: Sequence[ProcessSpec], admin: Admin | None, rabbitmq_ui: str | None = None) -> str:
    """The URLs a person needs, and the administrator's credentials."""

    def rows_for(service: str, label: str, path: str) -> list[tuple[str, str]]:
        found = [s for s in specs if s.service == service and s.base_url]
        return [
            (label if i == 0 else f"{label} ({s.name})", f"{s.base_url}{path}") for i, s in enumerate(found)
        ]

    rows = rows_for("gateway", "web client", "/")
    rows += rows_for("auth", "auth API docs", "/docs")
    rows += [("mail inbox", s.base_url) for s in specs if s.name == "mail" and s.base_url]
    rows += rows_for("notifier", "SMS inbox (dev)", "/dev/sms")
    if rabbitmq_ui:
        rows.append(("RabbitMQ UI", f"{rabbitmq_ui} (guest / guest)"))
    if admin is not None:
        rows.append(("administrator", admin.credentials()))
    width = max(len(label) for label, _ in rows) if rows else 0
    lines = ["", "=" * 72, "  Consultation chat is running", ""]
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    lines += ["", "  Every service also serves /healthz, /readyz and /metrics.", "  Ctrl-C stops everything."]
    lines += ["=" * 72, ""]
    return "\n".join(lines)


def ports_in_use(specs: Sequence[ProcessSpec], env: Mapping[str, str]) -> list[str]:
    """``name:port`` for each planned port something already listens on (another `make run`?)."""
    wanted: list[tuple[str, int]] = []
    for spec in specs:
        if spec.ready_url:
            wanted.append((spec.name, int(spec.ready_url.rsplit(":", 1)[1].split("/")[0])))
        if spec.name == "mail":
            wanted.append(("mail (SMTP)", int(env.get("SINK_SMTP_PORT", SINK_SMTP_PORT))))
    busy = []
    for name, port in wanted:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{name}:{port}")
    return busy


def _rabbitmq_ui(host: str = "127.0.0.1", port: int = 15672) -> str | None:
    """The management UI's URL when the plugin listens locally."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return f"http://{host}:{port}/"
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default=os.environ.get("REPLICAS", ""), help="e.g. store=2,gateway=2")
    parser.add_argument("--services", default=",".join(START_ORDER), help="subset to start, comma-separated")
    parser.add_argument(
        "--port-step", type=int, default=DEFAULT_PORT_STEP, help="port offset between replicas"
    )
    parser.add_argument("--no-sink", action="store_true", help="do not start the dev mail sink")
    parser.add_argument("--no-admin", action="store_true", help="skip ensure-admin")
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown services: {', '.join(unknown)}")
    try:
        specs = plan(
            env=os.environ,
            services=services,
            replicas=parse_replicas(args.replicas),
            port_step=args.port_step,
            sink=not args.no_sink,
        )
    except ValueError as exc:
        parser.error(str(exc))
    supervisor = Supervisor(specs, ready_timeout=args.ready_timeout)
    if args.dry_run:
        for spec in specs:
            supervisor.log(f"{spec.name}: {' '.join(spec.argv)} {dict(spec.env)} ready={spec.ready_url}")
        return 0
    busy = ports_in_use(specs, os.environ)
    if busy:
        supervisor.log(f"ports already in use: {', '.join(busy)} (is the stack already running?)")
        return 1
    admin = None
    if not args.no_admin and "auth" in services:
        admin = ensure_admin(os.environ, lambda line: supervisor.say("admin", line))
        if admin is None:
            supervisor.log("could not ensure the administrator (see above): is the database migrated?")
            return 1

    def on_ready(ready: list[ProcessSpec]) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            print(banner(ready, admin, _rabbitmq_ui()), flush=True)

    return asyncio.run(supervisor.run(on_ready))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over the signals (ensure-admin)
        sys.exit(130)
