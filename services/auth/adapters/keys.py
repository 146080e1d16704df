"""ES256 signing keys by ``kid``: generated once in development, read from env or files in production.

Several auth processes may start at the same moment on a fresh machine, so
generation happens under an exclusive file lock, re-checks after taking it,
and writes through a temporary file and an atomic rename.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt

from shared.logging import get_logger
from shared.security import ALGORITHM

log = get_logger(__name__)

KEY_GLOB = "*.pem"
SECRET_FILE = "hmac.secret"
LOCK_FILE = ".lock"


class KeyConfigurationError(RuntimeError):
    """No usable signing key (production without a configured key, or a key that is not P-256)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk_members(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint (shortened): the same key gets the same kid in every process."""
    canonical = json.dumps(_public_jwk_members(public), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:16]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str
    public_jwk: dict[str, str]
    _jose_key: Any

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SigningKey:
        data = pem.encode() if isinstance(pem, str) else pem
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise KeyConfigurationError("signing keys must be EC P-256 (ES256)")
        text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        kid = key_id(private.public_key())
        public_jwk = {**_public_jwk_members(private.public_key()), "kid": kid, "alg": ALGORITHM, "use": "sig"}
        return cls(kid=kid, private_pem=text, public_jwk=public_jwk, _jose_key=jwk.construct(text, ALGORITHM))


class KeyRing:
    """Every key we publish, and the one we sign with."""

    def __init__(self, keys: list[SigningKey], active_kid: str | None = None) -> None:
        if not keys:
            raise KeyConfigurationError("no signing key")
        self.keys = {key.kid: key for key in keys}
        if active_kid is not None and active_kid not in self.keys:
            raise KeyConfigurationError(f"active kid {active_kid!r} not among the loaded keys")
        self.active = self.keys[active_kid] if active_kid else keys[0]

    def sign(self, claims: dict[str, Any]) -> str:
        return str(
            jwt.encode(claims, self.active._jose_key, algorithm=ALGORITHM, headers={"kid": self.active.kid})
        )

    def jwks(self) -> dict[str, Any]:
        """Public keys only: the active one first."""
        ordered = [self.active, *(k for k in self.keys.values() if k.kid != self.active.kid)]
        return {"keys": [dict(k.public_jwk) for k in ordered]}


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_files(directory: Path) -> list[Path]:
    """Newest first: generated files are named by UTC timestamp."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(KEY_GLOB), key=lambda p: p.name, reverse=True)


def generate_key_file(directory: Path) -> Path:
    """Add a new P-256 key to ``directory`` (also how an operator rotates keys in development)."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"key-{stamp}-{key_id(private.public_key())}.pem"
    _write_atomically(path, pem)
    return path


def ensure_dev_key(directory: Path) -> None:
    """Generate a key unless one exists; safe when several processes race on a fresh directory."""
    if _key_files(directory):
        return
    with _locked(directory):
        if not _key_files(directory):
            path = generate_key_file(directory)
            log.info("signing_key_generated", path=str(path))


def load_key_ring(
    *,
    directory: Path,
    private_key_pem: str | None,
    private_key_file: Path | None,
    active_kid: str | None,
    generate: bool,
) -> KeyRing:
    """The configured key (env or file) signs; keys in ``directory`` stay published for rotation."""
    if generate and not (private_key_pem or private_key_file):
        ensure_dev_key(directory)
    keys: list[SigningKey] = []
    if private_key_pem:
        keys.append(SigningKey.from_pem(private_key_pem.replace("\\n", "\n")))
    if private_key_file:
        keys.append(SigningKey.from_pem(private_key_file.read_bytes()))
    for path in _key_files(directory):
        key = SigningKey.from_pem(path.read_bytes())
        if all(k.kid != key.kid for k in keys):
            keys.append(key)
    return KeyRing(keys, active_kid)


def load_secret(*, directory: Path, configured: str | None, generate: bool) -> bytes:
    """The HMAC secret for one-time codes and CSRF tokens; dev keeps a generated one beside the keys."""
    if configured:
        return configured.encode()
    if not generate:
        raise KeyConfigurationError("AUTH_SECRET_KEY is required")
    path = directory / SECRET_FILE
    if not path.exists():
        with _locked(directory):
            if not path.exists():
                _write_atomically(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()
