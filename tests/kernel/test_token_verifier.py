"""TokenVerifier: an unreachable or broken JWKS gives ``KeysUnavailable``, not an HTTP error."""

from __future__ import annotations

import socket
import uuid

import pytest

from shared.security import InvalidToken, KeysUnavailable, TokenVerifier
from tests.support.tokens import TestIssuer


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


async def test_no_keys_and_auth_unreachable_raises_keys_unavailable() -> None:
    issuer = TestIssuer()
    verifier = TokenVerifier(closed_port_url(), issuer=issuer.issuer, audience=issuer.audience)
    with pytest.raises(KeysUnavailable):
        await verifier.verify(issuer.mint(uuid.uuid4()))


async def test_an_unknown_kid_while_auth_is_unreachable_raises_keys_unavailable() -> None:
    known, stranger = TestIssuer(), TestIssuer()
    verifier = TokenVerifier(
        closed_port_url(), issuer=known.issuer, audience=known.audience, min_refresh_s=0.0
    )
    verifier.set_jwks(known.jwks())
    assert (await verifier.verify(known.mint(uuid.uuid4()))).role == "USER"
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(stranger.mint(uuid.uuid4()))
    assert isinstance(caught.value, KeysUnavailable)


async def test_a_broken_jwks_document_raises_keys_unavailable() -> None:
    issuer = TestIssuer()
    issuer.jwks = lambda: {"keys": [{"kty": "EC", "kid": "x", "crv": "P-256", "x": "!!", "y": "!!"}]}  # type: ignore[method-assign]
    issuer.serve()
    try:
        verifier = TokenVerifier(issuer.jwks_url, issuer=issuer.issuer, audience=issuer.audience)
        with pytest.raises(KeysUnavailable):
            await verifier.verify(issuer.mint(uuid.uuid4()))
    finally:
        issuer.stop()
