"""Account field rules: usernames, emails, display names, roles and notification preferences."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.events import NotificationPreferences

Role = Literal["USER", "ADMIN"]
ROLES: tuple[Role, ...] = ("USER", "ADMIN")

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
# Deliberately simple: the verification link is the real proof that an address works.
EMAIL_RE = re.compile(
    r"^[^@\s\"<>,;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
HHMM_RE = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")
MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME = 64


class FieldError(ValueError):
    """A rule broken by one request field; ``field`` names it for the problem document."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_username(raw: str) -> str:
    """Usernames keep their case for display; uniqueness is case-insensitive (lower index)."""
    name = raw.strip()
    if not USERNAME_RE.fullmatch(name):
        raise FieldError(
            "username", "3-32 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return name


def normalize_email(raw: str) -> str:
    """Trimmed address with a lower-cased domain; uniqueness is case-insensitive."""
    email = raw.strip()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.fullmatch(email):
        raise FieldError("email", "not a valid email address")
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalize_display_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    name = " ".join(raw.split())
    if not name:
        return None
    if len(name) > MAX_DISPLAY_NAME or any(ord(ch) < 32 for ch in name):
        raise FieldError("display_name", f"at most {MAX_DISPLAY_NAME} printable characters")
    return name


def looks_like_email(login: str) -> bool:
    return "@" in login


def validate_preferences(prefs: NotificationPreferences) -> NotificationPreferences:
    """Quiet hours come as a pair of ``HH:MM`` strings in a real IANA time zone."""
    for name in ("quiet_hours_start", "quiet_hours_end"):
        value = getattr(prefs, name)
        if value is not None and not HHMM_RE.fullmatch(value):
            raise FieldError(f"preferences.{name}", "expected HH:MM (24-hour)")
    if (prefs.quiet_hours_start is None) != (prefs.quiet_hours_end is None):
        raise FieldError("preferences.quiet_hours_end", "quiet hours need both start and end")
    if prefs.timezone not in _timezones():
        try:
            ZoneInfo(prefs.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise FieldError("preferences.timezone", "unknown time zone") from exc
    return prefs


_TZ_CACHE: set[str] = set()


def _timezones() -> set[str]:
    if not _TZ_CACHE:
        _TZ_CACHE.update(available_timezones())
        _TZ_CACHE.add("UTC")
    return _TZ_CACHE
