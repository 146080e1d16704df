"""The benchmark harness end to end with tiny parameters: it starts the real stack and runs W1-W4.

Asserts on structure (files written, every message acked and delivered,
every email received), never on speed: benchmarks are not tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

# The whole stack starts inside the first test (module fixture): allow more than the default 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    out = tmp_path_factory.mktemp("bench") / "smoke"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    records = [orjson.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines()]
    return out, records, log


def _of(records: list[dict[str, Any]], workload: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("workload") == workload and r.get("kind") == kind]


def test_smoke_run_writes_json_lines_summary_and_plot(
    smoke_run: tuple[Path, list[dict[str, Any]], str],
) -> None:
    out, records, _ = smoke_run
    assert records[0]["kind"] == "meta" and records[0]["machine"]["nproc"] >= 1
    assert not [r for r in records if r.get("kind") == "failure"]
    summary = (out / "summary.md").read_text()
    for heading in ("W1 idle density", "W2 steady chat", "W3 capacity", "W4 notifier", "Targets"):
        assert heading in summary
    assert (out / "latency.png").stat().st_size > 1000


def test_smoke_idle_connections_all_open(smoke_run: tuple[Path, list[dict[str, Any]], str]) -> None:
    _, records, _ = smoke_run
    levels = _of(records, "W1", "level")
    assert [r["target"] for r in levels] == [4, 8]
    for level in levels:
        assert level["open"] == level["target"] and level["failed"] == 0
        assert level["gateway_rss_kb"] > 0
        assert level["handshake_ms"]["n"] > 0


def test_smoke_chat_messages_are_all_acked_and_delivered(
    smoke_run: tuple[Path, list[dict[str, Any]], str],
) -> None:
    _, records, _ = smoke_run
    steps = _of(records, "W2", "step") + _of(records, "W3", "step")
    assert len(steps) == 3
    for step in steps:
        assert step["sent"] == step["planned"] > 0
        assert step["acked"] == step["sent"]
        assert step["delivered"] == step["expected_deliveries"] > 0
        assert step["out_of_order"] == 0 and not step["errors"]
        assert step["latency_ms"]["send_to_recipient"]["n"] == step["delivered"]
        procs = step["window"]["processes"]
        for role in ("gateway", "store", "auth", "notifier", "postgres", "rabbitmq", "loader"):
            assert procs[role]["pids"] >= 1, role
    # W2 runs the event tap: every message.created reached it.
    w2 = _of(records, "W2", "step")[0]
    assert w2["events"] == w2["sent"]
    assert _of(records, "W3", "capacity")[0]["capacity"] > 0


def test_smoke_offline_recipients_each_get_one_email(
    smoke_run: tuple[Path, list[dict[str, Any]], str],
) -> None:
    _, records, _ = smoke_run
    (w4,) = _of(records, "W4", "result")
    assert w4["messages"] == w4["recipients"] == 3
    assert w4["emails"] == 3 and w4["duplicates"] == 0
    assert w4["extra_latency_ms"]["n"] == 3
