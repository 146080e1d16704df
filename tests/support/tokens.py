"""A test token issuer: its own ES256 key, tokens with any claims, and its JWKS over real HTTP.

For tests of services that verify tokens without a running auth service; the
end-to-end tests use the real auth service instead.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt

from tests.support.smtp import free_port


class TestIssuer:
    __test__ = False

    def __init__(self, *, issuer: str = "chat-auth", audience: str = "chat") -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = uuid.uuid4().hex[:12]
        private = ec.generate_private_key(ec.SECP256R1())
        self.private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_pem = (
            private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    def jwks(self) -> dict[str, Any]:
        public = jwk.construct(self.public_pem, algorithm="ES256").to_dict()
        public.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [public]}

    def mint(
        self,
        user_id: uuid.UUID | str,
        role: str = "USER",
        *,
        ttl: int = 900,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "role": role,
            "typ": "access",
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return str(
            jwt.encode(
                claims, self.private_pem, algorithm="ES256", headers={"kid": self.kid, **(headers or {})}
            )
        )

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def serve(self) -> str:
        """Serve the JWKS on a free loopback port; returns its URL."""
        body = json.dumps(self.jwks()).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.jwks_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
