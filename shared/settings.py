"""Settings every service shares (prefix ``CHAT_``); each service adds its own prefixed class."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Connection strings and cross-service contracts; dev defaults match a local machine."""

    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore")

    environment: str = "development"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/chat"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_heartbeat_s: int = 10
    amqp_prefetch: int = 64
    amqp_delivery_limit: int = 5
    # Every exchange and queue name starts with this, so parallel test runs can share a vhost.
    amqp_prefix: str = "chat"
    rpc_timeout_s: float = 5.0
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "http://localhost:8000",
            "http://127.0.0.1:8000",
            "http://localhost:3000",
        ]
    )
    jwt_issuer: str = "chat-auth"
    jwt_audience: str = "chat"
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    log_level: str = "INFO"
    log_json: bool = True
    outbox_poll_interval_s: float = 1.0

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @property
    def is_development(self) -> bool:
        return self.environment in {"development", "test"}


@lru_cache
def get_common_settings() -> CommonSettings:
    return CommonSettings()
