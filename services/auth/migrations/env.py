"""Alembic environment of the auth service: schema ``auth``."""

from services.auth.adapters.tables import SCHEMA, metadata
from shared.migrations import run_env

run_env(metadata, SCHEMA)
