"""Alembic plumbing shared by every service: one schema, one version table each."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

SERVICES = ("auth", "store", "notifier", "gateway")
ROOT = Path(__file__).resolve().parent.parent


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url)
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Apply one service's migrations; blocking, so call it off the event loop."""
    command.upgrade(alembic_config(service, database_url), revision)


def services_with_migrations() -> list[str]:
    """Services that own a schema (a service without one, like a stateless edge, has no folder)."""
    return [s for s in SERVICES if (ROOT / "services" / s / "migrations" / "env.py").exists()]


def upgrade_all(database_url: str) -> None:
    for service in services_with_migrations():
        upgrade(service, database_url)


def run_env(metadata: MetaData, schema: str) -> None:
    """Body of each service's ``migrations/env.py`` (online mode, asyncpg)."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def migrate(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(main())
