"""Per-process CPU time and memory from /proc, grouped by role (service, PostgreSQL, RabbitMQ, loader).

CPU comes from ``/proc/<pid>/stat`` (utime + stime, all threads), memory from
``/proc/<pid>/status`` (VmRSS now, VmHWM peak). A process that appears during a
window counts from zero; one that vanished during it is lost (PostgreSQL
backends of a pool live for the whole run, so that loss is small).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcSample:
    pid: int
    comm: str
    cpu_ticks: int  # utime + stime
    rss_kb: int
    hwm_kb: int


def parse_stat(text: str) -> tuple[str, int]:
    """(comm, utime + stime ticks) from the text of ``/proc/<pid>/stat``; comm may hold spaces or ')'."""
    start, end = text.index("("), text.rindex(")")
    comm = text[start + 1 : end]
    fields = text[end + 2 :].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return comm, int(fields[11]) + int(fields[12])


def parse_status_kb(text: str, key: str) -> int:
    """A ``kB`` value (``VmRSS``, ``VmHWM``) from ``/proc/<pid>/status``; 0 when absent (kernel threads)."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def sample(pid: int) -> ProcSample | None:
    """One reading of a process, or None if it is gone."""
    try:
        comm, ticks = parse_stat((PROC / str(pid) / "stat").read_text())
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return ProcSample(pid, comm, ticks, parse_status_kb(status, "VmRSS"), parse_status_kb(status, "VmHWM"))


def pids_by_comm(name: str) -> list[int]:
    """Processes whose command name is ``name`` (e.g. ``beam.smp``): read-only scan of /proc."""
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def system_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (steal counts as busy elsewhere)."""
    line = (PROC / "stat").read_text().splitlines()[0].split()
    values = [int(v) for v in line[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user..steal; guest is already inside user
    return total - idle, total


@dataclass
class GroupReading:
    """CPU and memory of one role over a window."""

    name: str
    pids: list[int]
    cpu_ms: float
    rss_kb: int
    hwm_kb: int

    def as_dict(self, messages: int | None, wall_s: float) -> dict[str, object]:
        out: dict[str, object] = {
            "pids": len(self.pids),
            "cpu_ms": round(self.cpu_ms, 1),
            "cpu_cores": round(self.cpu_ms / 1000.0 / wall_s, 3) if wall_s > 0 else None,
            "rss_kb": self.rss_kb,
            "peak_rss_kb": self.hwm_kb,
        }
        if messages:
            out["cpu_ms_per_msg"] = round(self.cpu_ms / messages, 4)
        return out


@dataclass
class Meter:
    """CPU per role between ``start()`` and ``stop()``; callers pass the pids of each role both times."""

    _start: dict[str, dict[int, int]] = field(default_factory=dict)
    _t0: float = 0.0
    _sys0: tuple[int, int] = (0, 0)

    @staticmethod
    def _read(roles: Mapping[str, Iterable[int]]) -> dict[str, dict[int, ProcSample]]:
        readings: dict[str, dict[int, ProcSample]] = {}
        for role, pids in roles.items():
            found: dict[int, ProcSample] = {}
            for pid in pids:
                s = sample(pid)
                if s is not None:
                    found[pid] = s
            readings[role] = found
        return readings

    def start(self, roles: Mapping[str, Iterable[int]]) -> None:
        self._start = {r: {p: s.cpu_ticks for p, s in got.items()} for r, got in self._read(roles).items()}
        self._sys0 = system_cpu_ticks()
        self._t0 = time.monotonic()

    def stop(self, roles: Mapping[str, Iterable[int]]) -> Window:
        wall = time.monotonic() - self._t0
        busy1, total1 = system_cpu_ticks()
        groups: dict[str, GroupReading] = {}
        for role, got in self._read(roles).items():
            before = self._start.get(role, {})
            ticks = sum(s.cpu_ticks - before.get(p, 0) for p, s in got.items())
            groups[role] = GroupReading(
                role,
                sorted(got),
                ticks * 1000.0 / CLK_TCK,
                sum(s.rss_kb for s in got.values()),
                sum(s.hwm_kb for s in got.values()),
            )
        busy0, total0 = self._sys0
        ncpu = os.cpu_count() or 1
        machine_busy_cores = (busy1 - busy0) / max(1, total1 - total0) * ncpu
        return Window(wall, groups, machine_busy_cores)


@dataclass
class Window:
    """The result of one measured window."""

    wall_s: float
    groups: dict[str, GroupReading]
    machine_busy_cores: float

    def accounted_cores(self) -> float:
        return sum(g.cpu_ms for g in self.groups.values()) / 1000.0 / self.wall_s if self.wall_s else 0.0

    def as_dict(self, messages: int | None = None) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "machine_busy_cores": round(self.machine_busy_cores, 3),
            # CPU used on the machine by processes outside the roles (other users, tools): a noise indicator.
            "unaccounted_cores": round(max(0.0, self.machine_busy_cores - self.accounted_cores()), 3),
            "processes": {name: g.as_dict(messages, self.wall_s) for name, g in self.groups.items()},
        }
