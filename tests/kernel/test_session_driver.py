"""Hot statements on the session's driver connection stay inside the session's transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_sessionmaker, session_driver, transaction


class Boom(Exception):
    pass


@pytest.fixture
async def scratch(engine: AsyncEngine) -> AsyncIterator[str]:
    name = f"kt_driver_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY)"))
    yield name
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {name}"))


async def rows(engine: AsyncEngine, table: str) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))).scalars())


@pytest.mark.parametrize("first_statement", ["none", "sqlalchemy"])
async def test_driver_statements_roll_back_with_the_session_and_commit_with_it(
    engine: AsyncEngine, scratch: str, first_statement: str
) -> None:
    sessions = make_sessionmaker(engine)

    async def write(value: int, *, fail: bool) -> None:
        async with transaction(sessions) as session:
            if first_statement == "sqlalchemy":
                await session.execute(text("SELECT 1"))
            pg = await session_driver(session)  # with nothing run before: the transaction begins here
            await pg.execute(f"INSERT INTO {scratch} (id) VALUES ($1)", value)
            if fail:
                raise Boom()

    with pytest.raises(Boom):
        await write(1, fail=True)
    assert await rows(engine, scratch) == []  # rolled back with the session, not autocommitted
    await write(2, fail=False)
    assert await rows(engine, scratch) == [2]
