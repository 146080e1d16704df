"""Client WebSocket frames encoded ahead of time, so sending costs one ``transport.write``.

A client frame must be masked (RFC 6455 §5.3); each frame gets its own random
key at encoding time. Frames are whole and unfragmented, so writing them
between the library's own writes (pongs, close) never interleaves bytes.
"""

from __future__ import annotations

import os
import struct

OP_TEXT = 0x1


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (one big-int operation, not a Python loop)."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    n = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_client_text(payload: bytes, key: bytes | None = None) -> bytes:
    """A final, masked text frame carrying ``payload`` (UTF-8 JSON)."""
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | OP_TEXT, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | OP_TEXT, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | OP_TEXT, 0x80 | 127, n)
    return header + key + mask_bytes(payload, key)
