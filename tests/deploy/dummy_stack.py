"""Run the launcher's Supervisor over dummy services (a JSON list of ``[name, port, extra args]`` in argv[1]).

The real launcher, minus the real services: what the tests signal, kill and inspect.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from deploy.launcher import ProcessSpec, Supervisor

DUMMY = str(Path(__file__).with_name("dummy_service.py"))


def main() -> int:
    entries = json.loads(sys.argv[1])
    stop_timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    specs = [
        ProcessSpec(
            name=name,
            argv=(sys.executable, DUMMY, str(port), *extra),
            ready_url=f"http://127.0.0.1:{port}/readyz",
            base_url=f"http://127.0.0.1:{port}",
        )
        for name, port, extra in entries
    ]
    supervisor = Supervisor(specs, ready_timeout=20, stop_timeout=stop_timeout)

    def on_ready(_: list[ProcessSpec]) -> None:
        print("STACK READY", flush=True)

    return asyncio.run(supervisor.run(on_ready))


if __name__ == "__main__":
    sys.exit(main())
