"""Request dependencies: the auth context, the client IP, the authenticated caller (bearer or cookie)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.auth.domain.tokens import csrf_matches
from services.auth.service_layer.context import AuthContext
from services.auth.service_layer.errors import CsrfFailed, Forbidden, NotAuthenticated
from services.auth.service_layer.sessions import Authenticated, authenticate

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def get_context(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.auth
    return context


ContextDep = Annotated[AuthContext, Depends(get_context)]


def client_ip(request: Request) -> str:
    """The peer address; a trusted proxy's right-most ``X-Forwarded-For`` entry instead."""
    ctx = get_context(request)
    peer = request.client.host if request.client else "unknown"
    if peer in ctx.settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return peer


IpDep = Annotated[str, Depends(client_ip)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("expected 'Authorization: Bearer <token>'")
    return token.strip()


async def current_auth(request: Request) -> Authenticated:
    """Bearer header first; else the access cookie, which needs the CSRF header on unsafe methods."""
    ctx = get_context(request)
    token = bearer_token(request)
    from_cookie = token is None
    if token is None:
        token = request.cookies.get(ctx.settings.access_cookie_name)
    if not token:
        raise NotAuthenticated("missing access token")
    auth = await authenticate(ctx, token)
    if from_cookie and request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if auth.session_id is None or not csrf_matches(ctx.secret, auth.session_id, presented):
            raise CsrfFailed(f"cookie requests need the {CSRF_HEADER} header from login")
    request.state.cookie_auth = from_cookie
    return auth


async def current_admin(auth: Annotated[Authenticated, Depends(current_auth)]) -> Authenticated:
    if auth.user.role != "ADMIN":
        raise Forbidden("administrators only")
    return auth


CurrentAuth = Annotated[Authenticated, Depends(current_auth)]
CurrentAdmin = Annotated[Authenticated, Depends(current_admin)]
