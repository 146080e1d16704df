"""Auth settings (prefix ``AUTH_``); dev defaults work on a local machine, production refuses them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", populate_by_name=True)

    environment: str = Field(
        default="development", validation_alias=AliasChoices("CHAT_ENVIRONMENT", "AUTH_ENVIRONMENT")
    )
    host: str = "127.0.0.1"
    port: int = 8001

    # --- signing keys -------------------------------------------------------
    # Directory of ``*.pem`` EC P-256 private keys; dev generates one here on first start.
    keys_dir: Path = REPO_ROOT / "var" / "keys"
    # Production: the active signing key as PEM text or a file path (keys in keys_dir stay published).
    jwt_private_key: str | None = None
    jwt_private_key_file: Path | None = None
    # Pick the signing key among several (rotation); default: the newest file in keys_dir.
    jwt_active_kid: str | None = None
    # HMAC secret for one-time codes and CSRF; dev generates ``keys_dir/hmac.secret``.
    secret_key: str | None = None
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600

    # --- passwords (argon2id) ---------------------------------------------------
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19 * 1024
    argon2_parallelism: int = 1
    password_min_length: int = 10

    # --- browser cookies ----------------------------------------------------
    cookie_secure: bool = True
    cookie_domain: str | None = None
    access_cookie_name: str = "access_token"
    refresh_cookie_name: str = "refresh_token"
    csrf_cookie_name: str = "csrf_token"
    refresh_cookie_path: str = "/auth/refresh"

    # --- links and one-time tokens -----------------------------------------------
    frontend_base_url: str = "http://localhost:3000"
    email_verification_ttl_s: int = 24 * 3600
    password_reset_ttl_s: int = 3600

    # --- phone verification --------------------------------------------------
    otp_ttl_s: int = 300
    otp_max_attempts: int = 5
    otp_resend_cooldown_s: int = 60
    otp_daily_per_phone: int = 5
    otp_daily_per_ip: int = 20
    phone_default_region: str | None = None

    # --- rate limits (requests per window, shared by every replica) ---------------
    rate_limit_enabled: bool = True
    login_per_ip: int = 20
    login_per_ip_window_s: int = 60
    login_per_account: int = 10
    login_per_account_window_s: int = 900
    register_per_ip: int = 10
    register_per_ip_window_s: int = 3600
    refresh_per_ip: int = 120
    refresh_per_ip_window_s: int = 60
    password_reset_per_ip: int = 10
    password_reset_per_ip_window_s: int = 3600
    password_reset_per_account: int = 3
    password_reset_per_account_window_s: int = 3600
    otp_verify_per_ip: int = 30
    otp_verify_per_ip_window_s: int = 3600
    # Proxies whose X-Forwarded-For is believed (the right-most entry is the client).
    trusted_proxies: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> AuthSettings:
        if self.environment not in {"development", "test"}:
            if not (self.jwt_private_key or self.jwt_private_key_file or self.jwt_active_kid):
                raise ValueError("production needs AUTH_JWT_PRIVATE_KEY or AUTH_JWT_PRIVATE_KEY_FILE")
            if not self.secret_key or len(self.secret_key) < 32:
                raise ValueError("production needs AUTH_SECRET_KEY (at least 32 characters)")
        return self

    @property
    def is_development(self) -> bool:
        return self.environment in {"development", "test"}


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()
