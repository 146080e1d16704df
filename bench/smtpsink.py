"""A real SMTP server (aiosmtpd) in its own process that reports each mail's arrival on stdout.

Its own process so its CPU is not charged to the loader; it prints one JSON
line per accepted message with the arrival time on CLOCK_MONOTONIC, the clock
the loader uses, so message→email latency needs no clock sync.
``python -m bench.smtpsink --port N`` prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from email.parser import BytesHeaderParser
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, Envelope, Session

_headers = BytesHeaderParser()


class Reporter:
    """aiosmtpd handler: accept everything, report arrival time, recipients and Message-ID."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        raw = envelope.original_content or envelope.content or b""
        head = _headers.parsebytes(raw if isinstance(raw, bytes) else raw.encode())
        line = orjson.dumps(
            {
                "t": now,
                "rcpt": list(envelope.rcpt_tos),
                "message_id": head.get("Message-ID"),
                "subject": head.get("Subject"),
                "bytes": len(raw),
            }
        )
        self.out.write(line + b"\n")
        self.out.flush()
        return "250 OK"


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Reporter()

    def factory() -> Any:
        return SMTP(handler, hostname="127.0.0.1", data_size_limit=1 << 20)

    server = await loop.create_server(factory, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
