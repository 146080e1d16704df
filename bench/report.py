"""Results on disk: JSON lines (one per measurement), a markdown summary with the targets, a PNG plot."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"

# The targets of issue 7 (2 cores, everything on one machine, full durability).
TARGETS = {
    "rss_per_conn_kb": 16.0,
    "connections": 15000,
    "w2_rate": 200.0,
    "w2_recipient_p50_ms": 5.0,
    "w2_recipient_p99_ms": 25.0,
    "w2_ack_p99_ms": 15.0,
    "w3_capacity": 1000.0,
    "w4_extra_p99_ms": 250.0,
    "w4_emails_per_s": 200.0,
}


def machine() -> dict[str, Any]:
    """What the figures came from."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


class ResultWriter:
    def __init__(self, out_dir: Path | None = None, label: str = "run") -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.dir = out_dir or RESULTS / f"{stamp}-{label}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "results.jsonl"
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        record = {"ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **record}
        self.records.append(record)
        with self.jsonl.open("ab") as fh:
            fh.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY, default=_default) + b"\n")

    def finish(self, *, link_latest: bool = True) -> tuple[Path, Path | None]:
        summary = self.dir / "summary.md"
        summary.write_text(render_summary(self.records))
        plot = self.dir / "latency.png"
        made = render_plot(self.records, plot)
        if link_latest and self.dir.parent == RESULTS:
            latest = RESULTS / "latest"
            try:
                if latest.is_symlink() or latest.exists():
                    latest.unlink()
                latest.symlink_to(self.dir.name)
            except OSError:
                pass
        return summary, plot if made else None


def _default(obj: object) -> object:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


# --- summary ---------------------------------------------------------------------


def _f(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lat(rec: dict[str, Any], kind: str, key: str) -> Any:
    return rec.get("latency_ms", {}).get(kind, {}).get(key)


def _proc(rec: dict[str, Any], role: str, key: str) -> Any:
    return rec.get("window", {}).get("processes", {}).get(role, {}).get(key)


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


ROLES = (
    "gateway",
    "store",
    "auth",
    "notifier",
    "postgres",
    "postgres-aux",
    "rabbitmq",
    "loader",
    "smtp-sink",
)
# Columns of the CPU-per-message cells; "system" = everything but the loader and the SMTP sink.
CPU_COLUMNS = ("gateway", "store", "notifier", "postgres", "rabbitmq")


def _per_msg(rec: dict[str, Any], role: str) -> Any:
    """Marginal CPU per message (above the idle baseline) when measured, else the plain ratio."""
    marginal = rec.get("marginal_cpu_ms_per_msg")
    if isinstance(marginal, dict) and role in marginal:
        return marginal[role]
    return _proc(rec, role, "cpu_ms_per_msg")


def _system_cpu_per_msg(rec: dict[str, Any]) -> float | None:
    numbers = [v for r in ROLES[:7] if isinstance(v := _per_msg(rec, r), (int, float))]
    return sum(numbers) if numbers else None


def _cpu_cells(rec: dict[str, Any]) -> str:
    cells = [_f(_per_msg(rec, r), 3) for r in CPU_COLUMNS]
    cells.append(_f(_system_cpu_per_msg(rec), 3))
    return " | ".join(cells)


def render_summary(records: Iterable[dict[str, Any]]) -> str:
    recs = list(records)
    out: list[str] = ["# Benchmark summary", ""]
    meta = next((r for r in recs if r.get("kind") == "meta"), None)
    if meta:
        m = meta.get("machine", {})
        out += [
            f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('mem_gib')} GiB RAM, "
            f"kernel {m.get('kernel')}, Python {m.get('python')}. Preset `{meta.get('preset')}`, "
            f"stack `{meta.get('stack')}`, git `{meta.get('git')}`. Background load before the run: "
            f"{_f(meta.get('background_busy_cores'), 2)} cores (other processes on the machine; "
            "the 'other' column shows it per window).",
            "",
        ]
    w1 = [r for r in recs if r.get("workload") == "W1" and r.get("kind") == "level"]
    if w1:
        out += [
            "## W1 idle density",
            "",
            "| connections | open | failed | handshakes/s | handshake p50 / p99 ms | gateway RSS KB/conn "
            "| gateway idle CPU (cores) | loader CPU (cores) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in w1:
            out.append(
                f"| {r['target']} | {r['open']} | {r['failed']} | {_f(r.get('handshakes_per_s'))} | "
                f"{_f(r.get('handshake_ms', {}).get('p50'))} / {_f(r.get('handshake_ms', {}).get('p99'))} | "
                f"{_f(r.get('rss_per_conn_kb'), 2)} | {_f(r.get('idle', {}).get('gateway_cores'), 3)} | "
                f"{_f(r.get('loader_cpu_cores'), 3)}{' ⚠' if r.get('loader_flagged') else ''} |"
            )
        out.append("")
    for wl, title in (("W2", "W2 steady chat"), ("W3", "W3 capacity")):
        rows = [r for r in recs if r.get("workload") == wl and r.get("kind") == "step"]
        if not rows:
            continue
        out += [
            f"## {title}",
            "",
            "Latency in ms from each message's scheduled send time. CPU in ms per acked message above the "
            "idle baseline, by process (system = services, PostgreSQL and RabbitMQ; not the loader). "
            "'missing' = deliveries not arrived by the end of the drain window (late or lost).",
            "",
            "| rate/s | sent | ack p50 / p99 | recipient p50 / p95 / p99 / max | event p50 / p99 | missing "
            "| errors | gateway | store | notifier | postgres | rabbitmq | system ms/msg "
            "| machine busy (cores) | other (cores) | loader (cores) | held |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            errors = sum((r.get("errors") or {}).values())
            out.append(
                f"| {_f(r['rate'], 0)} | {r['sent']} | {_f(_lat(r, 'send_to_ack', 'p50'))} / "
                f"{_f(_lat(r, 'send_to_ack', 'p99'))} | {_f(_lat(r, 'send_to_recipient', 'p50'))} / "
                f"{_f(_lat(r, 'send_to_recipient', 'p95'))} / {_f(_lat(r, 'send_to_recipient', 'p99'))} / "
                f"{_f(_lat(r, 'send_to_recipient', 'max'))} | {_f(_lat(r, 'send_to_event', 'p50'))} / "
                f"{_f(_lat(r, 'send_to_event', 'p99'))} | {r.get('lost_deliveries')} | {errors} | "
                f"{_cpu_cells(r)} | {_f(r.get('window', {}).get('machine_busy_cores'), 2)} | "
                f"{_f(r.get('window', {}).get('unaccounted_cores'), 2)} | "
                f"{_f(_proc(r, 'loader', 'cpu_cores'), 3)}{' ⚠' if r.get('loader_flagged') else ''} | "
                f"{_mark(r.get('held'))} |"
            )
        out.append("")
        db_rows = [r for r in rows if r.get("database", {}).get("per_msg")]
        if db_rows:
            out += [
                "PostgreSQL work per acked message (pg_stat_database of the bench database; rollbacks "
                "include connection-pool pings, sessions are new server connections):",
                "",
                "| rate/s | commits | rollbacks | new sessions | rows inserted | updated | deleted | "
                "rows fetched | buffer accesses |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in db_rows:
                d = r["database"]["per_msg"]
                keys = (
                    "xact_commit",
                    "xact_rollback",
                    "sessions",
                    "tup_inserted",
                    "tup_updated",
                    "tup_deleted",
                )
                cells = [_f(d.get(k), 2) for k in keys] + [
                    _f(d.get("tup_fetched"), 1),
                    _f(d.get("blocks"), 1),
                ]
                out.append(f"| {_f(r['rate'], 0)} | " + " | ".join(cells) + " |")
            out.append("")
        cap = next((c for c in recs if c.get("workload") == wl and c.get("kind") == "capacity"), None)
        if cap:
            out += [
                f"Capacity (highest rate that held): **{_f(cap.get('capacity'), 0)} msg/s**; "
                f"stopped because: {cap.get('reason')}.",
                "",
            ]
    w4 = [r for r in recs if r.get("workload") == "W4" and r.get("kind") == "result"]
    for r in w4:
        lat = r.get("extra_latency_ms", {})
        out += [
            "## W4 notifier (offline recipients, email)",
            "",
            "| messages | emails (distinct recipients) | duplicates | grace s "
            "| latency - grace p50 / p99 / max ms (of emails received) | emails/s |",
            "|---|---|---|---|---|---|",
            f"| {r.get('messages')} | {r.get('emails')} | {r.get('duplicates')} | "
            f"{r.get('grace_window_s')} | "
            f"{_f(lat.get('p50'))} / {_f(lat.get('p99'))} / {_f(lat.get('max'))} | "
            f"{_f(r.get('emails_per_s'))} |",
            "",
        ]
        procs = r.get("window", {}).get("processes", {})
        if procs:
            per_role = ", ".join(
                f"{role} {_f(p.get('cpu_ms_per_msg'), 2)}"
                for role, p in procs.items()
                if p.get("cpu_ms_per_msg")
            )
            out += [f"CPU ms per message (whole window, including the emails): {per_role}.", ""]
        d = r.get("database", {}).get("per_msg")
        if d:
            out += [
                f"PostgreSQL per message: {_f(d.get('xact_commit'), 2)} commits, "
                f"{_f(d.get('xact_rollback'), 2)} rollbacks, {_f(d.get('sessions'), 2)} new sessions, "
                f"{_f(d.get('tup_fetched'), 1)} rows fetched, {_f(d.get('blocks'), 1)} buffer accesses.",
                "",
            ]
    dead = next((r for r in recs if r.get("kind") == "dead_letters"), None)
    if dead and dead.get("total"):
        out += [
            "## Dead letters at the end of the run",
            "",
            "| routing key: reason | messages |",
            "|---|---|",
        ]
        out += [f"| {k} | {v} |" for k, v in sorted(dead["reasons"].items(), key=lambda kv: -kv[1])]
        out.append("")
    out += render_targets(recs)
    flagged = [r for r in recs if r.get("loader_flagged")]
    if flagged:
        out += [
            "",
            f"⚠ The loader used more than a quarter of a core in {len(flagged)} window(s): "
            "their latencies include loader contention.",
        ]
    return "\n".join(out) + "\n"


def evaluate_targets(recs: list[dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, met) rows; ``met`` None when the workload did not run."""
    rows: list[tuple[str, str, str, bool | None]] = []
    w1 = [r for r in recs if r.get("workload") == "W1" and r.get("kind") == "level"]
    if w1:
        top = max(w1, key=lambda r: r.get("open", 0))
        rss = top.get("rss_per_conn_kb")
        rows.append(
            (
                "W1 RSS per idle connection",
                "≤ 16 KB",
                f"{_f(rss, 2)} KB at {top.get('open')}",
                None if rss is None else rss <= TARGETS["rss_per_conn_kb"],
            )
        )
        rows.append(
            (
                "W1 connections on one gateway",
                "≥ 15,000",
                str(top.get("open")),
                top.get("open", 0) >= TARGETS["connections"],
            )
        )
    w2 = [r for r in recs if r.get("workload") == "W2" and r.get("kind") == "step"]
    at = next((r for r in w2 if r.get("rate") == TARGETS["w2_rate"]), None)
    if at:
        p50 = _lat(at, "send_to_recipient", "p50")
        p99 = _lat(at, "send_to_recipient", "p99")
        ack = _lat(at, "send_to_ack", "p99")
        rows.append(
            (
                "W2 @200/s send→recipient p50",
                "≤ 5 ms",
                f"{_f(p50)} ms",
                None if p50 is None else p50 <= TARGETS["w2_recipient_p50_ms"],
            )
        )
        rows.append(
            (
                "W2 @200/s send→recipient p99",
                "≤ 25 ms",
                f"{_f(p99)} ms",
                None if p99 is None else p99 <= TARGETS["w2_recipient_p99_ms"],
            )
        )
        rows.append(
            (
                "W2 @200/s send→ack p99",
                "≤ 15 ms",
                f"{_f(ack)} ms",
                None if ack is None else ack <= TARGETS["w2_ack_p99_ms"],
            )
        )
    cap = next((c for c in recs if c.get("workload") == "W3" and c.get("kind") == "capacity"), None)
    if cap:
        value = cap.get("capacity") or 0.0
        rows.append(
            ("W3 capacity", "≥ 1,000 msg/s", f"{_f(value, 0)} msg/s", value >= TARGETS["w3_capacity"])
        )
    w4 = next((r for r in recs if r.get("workload") == "W4" and r.get("kind") == "result"), None)
    if w4:
        p99 = w4.get("extra_latency_ms", {}).get("p99")
        rate = w4.get("emails_per_s")
        rows.append(
            (
                "W4 email latency - grace p99",
                "≤ 250 ms",
                f"{_f(p99)} ms",
                None if p99 is None else p99 <= TARGETS["w4_extra_p99_ms"],
            )
        )
        rows.append(
            (
                "W4 emails per second",
                "≥ 200/s",
                f"{_f(rate)}/s",
                None if rate is None else rate >= TARGETS["w4_emails_per_s"],
            )
        )
    return rows


def render_targets(recs: list[dict[str, Any]]) -> list[str]:
    rows = evaluate_targets(recs)
    if not rows:
        return []
    out = ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    out += [f"| {name} | {goal} | {measured} | {_mark(met)} |" for name, goal, measured, met in rows]
    return out


# --- plot ---------------------------------------------------------------------------


def render_plot(records: Iterable[dict[str, Any]], path: Path) -> bool:
    """Latency percentiles against offered rate (W2 and W3 steps); False when there is nothing to plot."""
    steps = [r for r in records if r.get("workload") in ("W2", "W3") and r.get("kind") == "step"]
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, title in (
        (axes[0], "send_to_recipient", "send → recipient"),
        (axes[1], "send_to_ack", "send → ack"),
    ):
        for wl, marker in (("W2", "o"), ("W3", "s")):
            rows = sorted((r for r in steps if r["workload"] == wl), key=lambda r: r["rate"])
            if not rows:
                continue
            rates = [r["rate"] for r in rows]
            for pct, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
                values = [_lat(r, kind, pct) for r in rows]
                values = [v if isinstance(v, (int, float)) and v > 0 else math.nan for v in values]
                ax.plot(rates, values, style, marker=marker, label=f"{wl} {pct}")
        ax.axhline(100, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("offered rate (msg/s)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
