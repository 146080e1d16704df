"""``chat-migrate``: create the database if missing and apply every service's migrations."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from shared.db import asyncpg_dsn
from shared.migrations import services_with_migrations, upgrade
from shared.settings import get_common_settings


async def ensure_database(database_url: str) -> None:
    """Create the target database through the maintenance database when it is absent."""
    dsn = asyncpg_dsn(database_url)
    base, _, name = dsn.rpartition("/")
    name = name.split("?")[0]
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", default=services_with_migrations())
    args = parser.parse_args()
    url = get_common_settings().database_url
    asyncio.run(ensure_database(url))
    for service in args.services:
        upgrade(service, url)
        print(f"migrated {service}")


if __name__ == "__main__":
    main()
