"""Store settings (prefix ``STORE_``)."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8002
    max_body_chars: int = 4000
    # Messages per minute one conversation accepts; the next one answers ``flood_limited``.
    flood_cap_per_minute: int = 60
    # A user's message in a CLOSED consultation reopens it (else: ``conversation_closed``).
    reopen_on_user_message: bool = True
    # "assigned": an admin sees conversations assigned to them (and unassigned ones);
    # "all": every admin sees every conversation.
    admin_scope: Literal["assigned", "all"] = "assigned"
    # Assign every new consultation to this administrator instead of the least-loaded one.
    fixed_admin_id: uuid.UUID | None = None
    max_batch: int = 256  # sends per group-commit transaction
    # Concurrent group-commit transactions per replica; one gathers the most sends per commit
    # (see rpc_sends_in_flight in the gateway), a lone send never waits.
    max_flushes_in_flight: int = 1
    rpc_prefetch: int = 128  # concurrent RPC requests per replica (what a group commit can gather)
    db_pool_size: int = 10
    # The send path publishes its own outbox rows right after the commit; until this many seconds
    # later no relay claims them, so a replica that died first has them published after that.
    outbox_lease_s: float = 10.0
    # How long a send batch's events (``message.created``, ``message.unread``) may wait for later
    # batches' to travel as one pack per type; deliveries to the participants never wait.
    outbox_event_linger_s: float = 0.05
    presence_fanout_cap: int = 2000  # counterparts told about one presence change


@lru_cache
def get_settings() -> StoreSettings:
    return StoreSettings()
