"""Phone one-time codes: 6 digits from ``secrets``, stored as an HMAC, short-lived, few attempts."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

CODE_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def hash_code(secret: bytes, phone: str, code: str) -> bytes:
    """Keyed hash: a six-digit code has too little entropy for a plain hash to protect it."""
    return hmac.new(secret, f"otp:{phone}:{code}".encode(), hashlib.sha256).digest()


def plausible_code(code: str) -> bool:
    return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()


@dataclass(frozen=True)
class OtpState:
    """A stored code after this attempt was counted (``attempts`` includes it)."""

    code_hash: bytes
    expires_at: datetime
    attempts: int
    consumed: bool


OtpVerdict = Literal["ok", "invalid"]


def judge_code(
    state: OtpState | None, *, secret: bytes, phone: str, code: str, now: datetime, max_attempts: int
) -> OtpVerdict:
    """One answer for every failure, so a caller learns nothing about the number or the code."""
    if state is None or state.consumed or state.expires_at <= now or state.attempts > max_attempts:
        return "invalid"
    if not plausible_code(code):
        return "invalid"
    if not hmac.compare_digest(state.code_hash, hash_code(secret, phone, code)):
        return "invalid"
    return "ok"
