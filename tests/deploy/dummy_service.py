"""A stand-in service for launcher tests: /readyz turns green after a delay; can misbehave on request.

python dummy_service.py PORT [--ready-after S] [--crash-after S] [--ignore-term] [--grandchild PIDFILE]
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import subprocess
import sys
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--ready-after", type=float, default=0.2)
    parser.add_argument("--crash-after", type=float, default=None)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--grandchild", default=None, help="start a sleeping child and write its pid here")
    args = parser.parse_args()
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = time.monotonic() - started >= args.ready_after
            self.send_response(200 if self.path == "/readyz" and ready else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.grandchild:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(args.grandchild, "w") as fh:
            fh.write(str(child.pid))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(
        json.dumps({"event": "dummy_started", "port": args.port, "colour": "\x1b[31mred\x1b[0m"}), flush=True
    )
    while True:
        time.sleep(0.05)
        if args.crash_after is not None and time.monotonic() - started > args.crash_after:
            print("dummy crashing on purpose", flush=True)
            sys.exit(3)


if __name__ == "__main__":
    main()
