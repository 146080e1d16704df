"""`make test` fails when no test ran, even though pytest itself would pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy.pytest_gate import executed

ROOT = Path(__file__).resolve().parents[2]


def test_executed_counts_tests_that_were_not_skipped(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text('<testsuites><testsuite tests="5" skipped="2" failures="0"/></testsuites>')
    assert executed(report) == 3
    assert executed(tmp_path / "missing.xml") == 0


def _gate(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(body)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy.pytest_gate",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            f"--rootdir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_where_everything_is_skipped_fails(tmp_path: Path) -> None:
    result = _gate(tmp_path, "import pytest\n\n@pytest.mark.skip\ndef test_x():\n    pass\n")
    assert result.returncode == 1
    assert "no test ran" in result.stdout


def test_a_run_with_a_passing_test_passes(tmp_path: Path) -> None:
    result = _gate(tmp_path, "def test_x():\n    assert True\n")
    assert result.returncode == 0, result.stdout
