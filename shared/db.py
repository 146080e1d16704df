"""SQLAlchemy 2 async engine and sessions on asyncpg; each service owns one schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata(schema: str) -> MetaData:
    """Metadata bound to one service's PostgreSQL schema."""
    return MetaData(schema=schema, naming_convention=NAMING)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: with asyncpg it costs a transaction per checkout (~5% of the store's CPU).
        # A connection PostgreSQL dropped fails once, invalidates the pool, and callers retry.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Bound values (phone numbers, emails, code hashes, message bodies) stay out of exception
        # text: errors are logged, and logs must never carry them.
        hide_parameters=True,
        connect_args={"server_settings": {"application_name": "chat"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session


# Driver errors that mean "the connection or the server is gone", not "the statement was wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver, for the hottest paths (statements autocommit).

    SQLAlchemy's per-statement work costs more than asyncpg's own; the pool, its limits and
    its reset stay SQLAlchemy's. A connection that broke is invalidated so the pool replaces it.
    """
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg: asyncpg.Connection = raw.driver_connection
        try:
            yield pg
        except CONNECTION_ERRORS:
            await conn.invalidate()
            raise


@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """``driver_connection`` inside one transaction."""
    async with driver_connection(engine) as pg, pg.transaction():
        yield pg


async def session_driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under ``session``'s transaction, for hot fixed statements inside it.

    SQLAlchemy's asyncpg adapter begins its transaction lazily, at its first statement: when
    nothing ran yet, it is begun here (the adapter's own BEGIN, so SQLAlchemy commits or rolls
    it back as usual), so that what follows is inside the transaction, not autocommitted alone.
    """
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    pg: asyncpg.Connection = raw.driver_connection
    if not pg.is_in_transaction():
        begin = getattr(raw.dbapi_connection, "_start_transaction", None)
        if begin is not None:
            await begin()
        if not pg.is_in_transaction():  # an adapter without that hook: any statement begins it
            await conn.exec_driver_sql("SELECT 1")
    return pg


async def database_ready(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def asyncpg_dsn(url: str) -> str:
    """The plain libpq URL asyncpg wants, from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
