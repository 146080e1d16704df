"""Request and response bodies of the auth HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.auth.adapters.repository import UserRecord
from services.auth.domain.phones import mask_phone
from shared.events import NotificationPreferences

Role = Literal["USER", "ADMIN"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    display_name: str | None = Field(default=None, max_length=256)


class CreateUserIn(RegisterIn):
    role: Role = "ADMIN"
    email_verified: bool = False


class LoginIn(Body):
    login: str = Field(min_length=1, max_length=320, description="username or email")
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(Body):
    refresh_token: str | None = Field(default=None, max_length=256)


class PreferencesPatch(Body):
    email_enabled: bool | None = None
    sms_enabled: bool | None = None
    quiet_hours_start: str | None = Field(default=None, max_length=5, description="HH:MM or null to clear")
    quiet_hours_end: str | None = Field(default=None, max_length=5, description="HH:MM or null to clear")
    timezone: str | None = Field(default=None, max_length=64, description="IANA time zone")

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent; quiet hours may be cleared with null."""
        sent = {name: getattr(self, name) for name in self.model_fields_set}
        return {k: v for k, v in sent.items() if v is not None or k.startswith("quiet_hours")}


class ProfilePatch(Body):
    display_name: str | None = Field(default=None, max_length=256)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    preferences: PreferencesPatch | None = None


class PasswordChangeIn(Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class ForgotPasswordIn(Body):
    email: str = Field(min_length=1, max_length=320)


class ResetPasswordIn(Body):
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=1024)


class VerifyEmailIn(Body):
    token: str = Field(min_length=1, max_length=256)


class PhoneStartIn(Body):
    phone: str = Field(min_length=1, max_length=32)


class PhoneVerifyIn(Body):
    phone: str = Field(min_length=1, max_length=32)
    code: str = Field(min_length=1, max_length=16)


class RoleIn(Body):
    role: Role


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    role: Role
    display_name: str | None
    email: str | None
    email_verified: bool
    phone_masked: str | None
    phone_verified: bool
    preferences: NotificationPreferences
    created_at: datetime

    @classmethod
    def of(cls, user: UserRecord) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            display_name=user.display_name,
            email=user.email,
            email_verified=user.email_verified,
            phone_masked=mask_phone(user.phone) if user.phone else None,
            phone_verified=user.phone_verified,
            preferences=user.preferences,
            created_at=user.created_at,
        )


class TokensOut(BaseModel):
    user: UserOut
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class CookieSessionOut(BaseModel):
    """Cookie mode: the tokens are in httpOnly cookies; send ``csrf_token`` as ``X-CSRF-Token``."""

    user: UserOut
    token_type: Literal["cookie"] = "cookie"
    expires_in: int
    csrf_token: str


class UsersPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class PhoneCodeSentOut(BaseModel):
    phone_masked: str
    expires_in: int
    resend_after: int


class AcceptedOut(BaseModel):
    status: Literal["accepted"] = "accepted"
