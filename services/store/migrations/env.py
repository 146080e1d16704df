"""Alembic environment of the store service: schema ``store``."""

from services.store.adapters.tables import SCHEMA, metadata
from shared.migrations import run_env

run_env(metadata, SCHEMA)
