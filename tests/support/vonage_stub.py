"""A local HTTPS endpoint that answers like Vonage's SMS API, signed by a throwaway test CA.

The notifier talks to it through the real Vonage SDK (``NOTIFIER_VONAGE_REST_HOST`` =
``127.0.0.1:<port>``, ``NOTIFIER_VONAGE_CA_BUNDLE`` = ``ca_path``). ``fail_next`` scripts the
next replies: an HTTP status (429, 500) or a Vonage status code in a 200 body (1 throttled,
3 invalid params, ...).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.smtp import free_port

API_KEY = "test-key"
API_SECRET = "test-secret-0123456789"


@dataclass(frozen=True)
class StubReply:
    """One scripted answer: ``http_status`` != 200 is an HTTP error, else ``status`` in the JSON body."""

    http_status: int = 200
    status: str = "0"
    error_text: str = ""
    # Accept the SMS but give the number back as a JSON number: a reply the SDK cannot read.
    to_as_number: bool = False


@dataclass(frozen=True)
class ReceivedSms:
    to: str
    sender: str
    text: str
    client_ref: str | None
    received_at: float  # time.monotonic()


@dataclass
class VonageState:
    messages: list[ReceivedSms] = field(default_factory=list)
    requests: int = 0
    fail_next: list[StubReply] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, phone: str) -> list[ReceivedSms]:
        digits = phone.lstrip("+")
        return [m for m in self.messages if m.to == digits]

    async def wait_for(
        self, count: int, *, to: str | None = None, timeout: float = 10.0
    ) -> list[ReceivedSms]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.to(to) if to else list(self.messages)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} SMS, got {len(found)}")
            await asyncio.sleep(0.01)


def _write_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1/localhost signed by it; returns (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


class VonageStub:
    """``POST /sms/json`` over HTTPS on loopback, checking the SDK's Basic credentials."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vonage-stub-")
        self.ca_path, cert_path, key_path = _write_certs(Path(self._dir.name))
        self.state = VonageState()
        self.port = free_port()
        state = self.state
        expected_auth = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                with state.lock:
                    state.requests += 1
                    reply = state.fail_next.pop(0) if state.fail_next else StubReply()
                if self.path != "/sms/json":
                    return self._json(404, {"error": "not found"})
                if self.headers.get("Authorization") != expected_auth:
                    return self._json(401, {"type": "unauthorized", "title": "Invalid credentials"})
                if reply.http_status != 200:
                    return self._json(reply.http_status, {"title": "scripted failure"})
                if reply.status != "0":
                    return self._json(
                        200,
                        {
                            "message-count": "1",
                            "messages": [{"status": reply.status, "error-text": reply.error_text or "error"}],
                        },
                    )
                message_id = uuid.uuid4().hex[:16].upper()
                with state.lock:
                    state.messages.append(
                        ReceivedSms(
                            to=form.get("to", ""),
                            sender=form.get("from", ""),
                            text=form.get("text", ""),
                            client_ref=form.get("client-ref"),
                            received_at=time.monotonic(),
                        )
                    )
                self._json(
                    200,
                    {
                        "message-count": "1",
                        "messages": [
                            {
                                "to": int(form["to"]) if reply.to_as_number else form.get("to", ""),
                                "message-id": message_id,
                                "status": "0",
                                "remaining-balance": "10.0",
                                "message-price": "0.05",
                                "network": "12345",
                            }
                        ],
                    },
                )

            def _json(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def rest_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Notifier settings that point the real SDK at this endpoint."""
        return {
            "NOTIFIER_SMS_PROVIDER": "vonage",
            "NOTIFIER_VONAGE_API_KEY": API_KEY,
            "NOTIFIER_VONAGE_API_SECRET": API_SECRET,
            "NOTIFIER_VONAGE_REST_HOST": self.rest_host,
            "NOTIFIER_VONAGE_CA_BUNDLE": str(self.ca_path),
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()
