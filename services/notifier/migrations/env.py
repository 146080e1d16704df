from services.notifier.adapters.tables import SCHEMA, metadata
from shared.migrations import run_env

run_env(metadata, SCHEMA)
