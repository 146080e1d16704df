"""Failures a use case reports; the HTTP layer turns each into a problem document."""

from __future__ import annotations

from services.auth.domain.ratelimit import Decision


class AuthError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.field = field


class InvalidInput(AuthError):
    status = 422
    code = "validation_error"
    title = "Validation failed"


class NotAuthenticated(AuthError):
    status = 401
    code = "not_authenticated"
    title = "Not authenticated"


class InvalidCredentials(AuthError):
    status = 401
    code = "invalid_credentials"
    title = "Invalid credentials"


class InvalidRefreshToken(AuthError):
    status = 401
    code = "invalid_refresh_token"
    title = "Invalid refresh token"


class Forbidden(AuthError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    title = "CSRF check failed"


class NotFound(AuthError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(AuthError):
    status = 409
    code = "conflict"
    title = "Already taken"


class InvalidCode(AuthError):
    status = 400
    code = "invalid_code"
    title = "Invalid or expired code"


class InvalidLink(AuthError):
    status = 400
    code = "invalid_link"
    title = "Invalid or expired link"


class RateLimited(AuthError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, decision: Decision, detail: str | None = None) -> None:
        super().__init__(detail or "try again later")
        self.decision = decision
