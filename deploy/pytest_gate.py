"""Run pytest and fail when no test actually ran (``make test``).

pytest exits 0 when every collected test was skipped, and 5 when none was
collected; a green run that proved nothing must not pass, so this wrapper reads
pytest's JUnit XML report and exits 1 unless at least one test ran. Every other
outcome keeps pytest's own exit code and output.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path


def executed(report: Path) -> int:
    """Tests that ran (not skipped) according to a JUnit XML report; 0 when there is none."""
    try:
        root = ET.parse(report).getroot()  # noqa: S314 - our own pytest's output
    except (OSError, ET.ParseError):
        return 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="pytest-gate-") as tmp:
        report = Path(tmp) / "junit.xml"
        code = subprocess.call([sys.executable, "-m", "pytest", f"--junitxml={report}", *argv])
        ran = executed(report)
    if code == 0 and ran == 0:
        print("FAILED: pytest passed but no test ran (everything was skipped or deselected)", flush=True)
        return 1
    if code == 5:
        print("FAILED: pytest collected no test", flush=True)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
