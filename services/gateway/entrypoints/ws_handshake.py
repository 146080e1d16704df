"""What a WebSocket upgrade request gets, decided from its path and headers alone (no network)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import cookie_parser

from services.gateway.domain.tokens import chosen_subprotocol, token_from_request
from shared.origins import origin_allowed

WS_PATH = "/ws"
NOT_FOUND = 404
FORBIDDEN = 403
# Headers that may legally repeat and mean one list when joined (RFC 9110 5.3; cookies RFC 6265 5.4).
_JOINED = {"sec-websocket-protocol": ", ", "cookie": "; "}


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An upgrade worth authenticating: the token it carries (if any) and the subprotocol to echo."""

    token: str | None
    subprotocol: str | None


def header_map(raw_items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names, one value each: list headers joined, any other repeated one keeps its first."""
    headers: dict[str, str] = {}
    for name, value in raw_items:
        key = name.lower()
        if key not in headers:
            headers[key] = value
        elif key in _JOINED:
            headers[key] += _JOINED[key] + value
    return headers


def check_upgrade(
    target: str,
    headers: dict[str, str],
    allowed_origins: frozenset[str],
    *,
    cookie_name: str,
    subprotocol: str,
) -> Upgrade | int:
    """The HTTP status to refuse with, or the upgrade to authenticate.

    The Origin check comes first, as the allow-list middleware does for every other route:
    a foreign page's handshake is refused with 403 (cross-site WebSocket hijacking).
    """
    if not origin_allowed(headers.get("origin"), allowed_origins):
        return FORBIDDEN
    if target.partition("?")[0] != WS_PATH:
        return NOT_FOUND
    cookies = cookie_parser(headers.get("cookie", ""))
    return Upgrade(
        token_from_request(headers, cookies, cookie_name), chosen_subprotocol(headers, subprotocol)
    )
