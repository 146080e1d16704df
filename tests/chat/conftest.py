"""Fixtures for the chat suite: an in-process store on the real database and broker, users, tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.entrypoints.consumers import apply_user
from services.store.service import StoreService
from services.store.settings import StoreSettings
from shared.commands import Actor
from shared.db import make_engine
from shared.events import UserPayload, UserRegistered
from shared.messaging.topology import Topology
from tests.support.tokens import TestIssuer


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def issuer() -> Iterator[TestIssuer]:
    test_issuer = TestIssuer()
    test_issuer.serve()
    yield test_issuer
    test_issuer.stop()


async def register(engine: AsyncEngine, role: str = "USER", name: str | None = None) -> Actor:
    """Project a user.registered event into the store, as its consumer would."""
    user_id = uuid.uuid4()
    event = UserRegistered(
        payload=UserPayload(
            user_id=user_id,
            username=f"u{user_id.hex[:8]}",
            display_name=name,
            role=role,  # type: ignore[arg-type]
        )
    )
    async with engine.begin() as conn:
        await apply_user(conn, event)
    return Actor(user_id=user_id, role=role)  # type: ignore[arg-type]


def make_service(engine: AsyncEngine, **overrides: object) -> StoreService:
    settings = StoreSettings(**overrides)  # type: ignore[arg-type]
    return StoreService(engine, settings, Topology(prefix="t"))
