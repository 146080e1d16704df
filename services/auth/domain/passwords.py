"""Password policy and argon2id hashing (parameters from settings, work off the event loop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_LENGTH = 256  # argon2 accepts more; a cap keeps request bodies and CPU bounded
_COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    lines = _COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


class PasswordPolicyError(ValueError):
    """A password the policy refuses; the message is safe to show the user."""


def check_password_policy(password: str, *, username: str, min_length: int = 10) -> None:
    """Raise ``PasswordPolicyError`` unless the password is long enough, not the username, not common."""
    if len(password) < min_length:
        raise PasswordPolicyError(f"must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"must be at most {MAX_PASSWORD_LENGTH} characters")
    lowered = password.lower()
    if username and (lowered == username.lower() or lowered.strip() == username.lower()):
        raise PasswordPolicyError("must not be the username")
    if lowered in common_passwords() or lowered.strip() in common_passwords():
        raise PasswordPolicyError("is too common")
    if len(set(password)) < 3:
        raise PasswordPolicyError("is too repetitive")


@dataclass(frozen=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


class PasswordHashing:
    """argon2id behind async methods, so a verify never blocks the event loop."""

    def __init__(self, params: Argon2Parameters) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        # Verified against when the account does not exist, so both paths cost the same.
        self._dummy_hash = self._hasher.hash("dummy password for unknown accounts")

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def verify_sync(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; ``None`` hash (unknown account) burns the same time."""
        try:
            return (
                self._hasher.verify(password_hash or self._dummy_hash, password) and password_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.verify_sync, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash was made with other parameters than the current settings."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
