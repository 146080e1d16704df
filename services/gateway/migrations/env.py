"""Alembic environment of the gateway service: schema ``gateway``."""

from services.gateway.adapters.tables import SCHEMA, metadata
from shared.migrations import run_env

run_env(metadata, SCHEMA)
