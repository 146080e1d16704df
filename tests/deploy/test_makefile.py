"""The Makefile offers every documented target, wired to the right commands (checked with make -n)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def dry_run(*args: str) -> str:
    result = subprocess.run(
        ["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


def test_run_installs_checks_servers_migrates_then_launches() -> None:
    out = dry_run("run", "REPLICAS=store=2")
    steps = [
        "deploy/setup/install.sh",
        "-m deploy.infra",
        "-m shared.migrate",
        "-m deploy.launcher --replicas store=2",
    ]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)


def test_test_checks_servers_and_runs_pytest_through_the_no_test_gate() -> None:
    out = dry_run("test", "PYTEST_ARGS=tests/deploy")
    assert "-m deploy.infra" in out
    assert "ensure_chromium.sh" in out
    assert "-m deploy.pytest_gate tests/deploy" in out
    assert "shared.migrate" not in out  # tests migrate their own per-run database


def test_lint_migrate_bench_and_clean_exist() -> None:
    lint = dry_run("lint")
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy" in lint
    assert "-m shared.migrate" in dry_run("migrate")
    assert "python -m bench" in dry_run("bench")
    assert ".venv" not in dry_run("clean").split("find")[0]  # clean keeps the venv
