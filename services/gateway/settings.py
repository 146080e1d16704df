"""Gateway settings (prefix ``GATEWAY_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    instance_id: str | None = None  # default: a random id per process
    # Frames above this get an ``error`` frame; above ``ws_max_size`` the protocol closes with 1009.
    max_frame_bytes: int = 16 * 1024
    ws_max_size: int = 64 * 1024
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    # Per-connection token bucket over client frames.
    rate_per_s: float = 20.0
    rate_burst: int = 40
    rate_violations_before_close: int = 50
    send_buffer_frames: int = 512  # a client that lets more pile up is closed with 4009
    idle_after_s: float = 60.0
    heartbeat_s: float = 2.0
    instance_ttl_s: float = 10.0  # a silent instance's connections stop counting after this
    sweep_interval_s: float = 1.0
    replay_max: int = 200  # a resume gap above this answers ``reload``
    typing_ttl_ms: int = 5000
    resume_wait_s: float = 2.0  # live delivery starts at the first client frame or after this
    access_cookie: str = "access_token"
    subprotocol: str = "chat.v1"
    db_pool_size: int = 5
    # Sends that arrive while this many RPCs are out travel together in the next one. One keeps
    # batches largest on a small machine (measured: less CPU per message and a lower p99 at 200-400
    # msg/s than 4); a lone send still leaves at once.
    rpc_sends_in_flight: int = 1


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
