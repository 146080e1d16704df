"""The gateway's tables (schema ``gateway``); presence tables are plain SQL in the presence repository."""

from __future__ import annotations

from shared.db import service_metadata
from shared.outbox import outbox_table

SCHEMA = "gateway"
metadata = service_metadata(SCHEMA)
outbox = outbox_table(metadata)
