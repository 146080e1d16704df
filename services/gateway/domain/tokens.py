"""Where a WebSocket or REST client may put its access token (never only in the query string)."""

from __future__ import annotations

from collections.abc import Mapping

BEARER_PROTOCOL_PREFIX = "bearer."


def token_from_request(
    headers: Mapping[str, str], cookies: Mapping[str, str], cookie_name: str
) -> str | None:
    """``Authorization: Bearer``, then a ``bearer.<token>`` subprotocol entry, then the auth cookie."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for entry in offered_subprotocols(headers):
        if entry.startswith(BEARER_PROTOCOL_PREFIX) and len(entry) > len(BEARER_PROTOCOL_PREFIX):
            return entry[len(BEARER_PROTOCOL_PREFIX) :]
    return cookies.get(cookie_name) or None


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("sec-websocket-protocol", "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def chosen_subprotocol(headers: Mapping[str, str], ours: str) -> str | None:
    """Echo our protocol name when offered; never echo the token entry."""
    return ours if ours in offered_subprotocols(headers) else None
