"""What other services learn about a user (event-carried state)."""

from __future__ import annotations

from services.auth.adapters.repository import UserRecord
from shared.events import UserPayload


def user_payload(user: UserRecord) -> UserPayload:
    """What other services may know: email and phone only once verified."""
    return UserPayload(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        email=user.email if user.email_verified else None,
        phone=user.phone if user.phone_verified else None,
        role=user.role,
        preferences=user.preferences,
    )
