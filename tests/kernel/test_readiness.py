"""/readyz reflects the database and the broker, and recovers without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from shared.db import database_ready, make_engine
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from shared.web import create_app
from tests.support import infra
from tests.support.proxy import CuttableProxy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[CuttableProxy, CuttableProxy]]:
    pg = CuttableProxy(infra.PG_HOST, infra.PG_PORT)
    mq = CuttableProxy(infra.AMQP_HOST, infra.AMQP_PORT)
    await pg.start()
    await mq.start()
    yield pg, mq
    await pg.stop()
    await mq.stop()


async def wait_status(client: httpx.AsyncClient, status: int, timeout: float = 30.0) -> dict[str, object]:
    async def poll() -> dict[str, object]:
        while True:
            response = await client.get("/readyz")
            if response.status_code == status:
                body: dict[str, object] = response.json()
                return body
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def test_readyz_goes_red_when_a_dependency_is_cut_and_green_when_it_returns(
    proxies: tuple[CuttableProxy, CuttableProxy], database_url: str, amqp_url: str, run_id: str
) -> None:
    pg, mq = proxies
    db_url = database_url.replace(f":{infra.PG_PORT}/", f":{pg.port}/")
    mq_url = amqp_url.replace(f":{infra.AMQP_PORT}/", f":{mq.port}/")
    engine = make_engine(db_url, pool_size=2)
    broker = Broker(mq_url, Topology(prefix=f"ready{run_id}"), service="ready-test", heartbeat_s=2)
    await broker.start()

    def checks(_: FastAPI) -> dict[str, object]:
        async def broker_ready() -> bool:
            return broker.is_ready()

        return {"database": lambda: database_ready(engine), "broker": broker_ready}

    app = create_app(service="probe", allowed_origins=[], ready_checks=checks)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        await wait_status(client, 200)

        await pg.cut()
        body = await wait_status(client, 503)
        assert body["checks"] == {"database": False, "broker": True}
        await pg.restore()
        await wait_status(client, 200)

        await mq.cut()
        body = await wait_status(client, 503)
        assert body["checks"] == {"database": True, "broker": False}
        await mq.restore()
        await wait_status(client, 200)
        assert (await client.get("/healthz")).status_code == 200

    await broker.close()
    await engine.dispose()
