"""Phone numbers: parsed and stored as E.164, shown only masked."""

from __future__ import annotations

import phonenumbers

from shared.logging import mask_phone

__all__ = ["InvalidPhone", "mask_phone", "normalize_phone"]

MAX_PHONE_INPUT = 32


class InvalidPhone(ValueError):
    """Not a valid phone number."""


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """E.164 form of a valid number; raises ``InvalidPhone`` otherwise."""
    if not raw or len(raw) > MAX_PHONE_INPUT:
        raise InvalidPhone("invalid phone number")
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone("invalid phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("invalid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
