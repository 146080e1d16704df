"""RPC over RabbitMQ: replies by correlation id, clear errors, a timeout that says so."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.messaging.connection import Broker
from shared.messaging.rpc import RpcClient, RpcError, RpcServer, RpcTimeout

pytestmark = pytest.mark.timeout(30)


async def test_concurrent_calls_get_their_own_replies(broker: Broker) -> None:
    async def double(params: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01 * (params["n"] % 3))
        return {"n": params["n"] * 2, "actor": actor["user_id"]}

    server = RpcServer(broker, "store", {"double": double})
    client = RpcClient(broker, "store", timeout=5)
    await server.start()
    await client.start()
    results = await asyncio.gather(
        *(client.call("double", {"n": n}, actor={"user_id": f"u{n}"}) for n in range(50))
    )
    assert results == [{"n": n * 2, "actor": f"u{n}"} for n in range(50)]
    await client.stop()
    await server.stop()


async def test_handler_errors_reach_the_caller_with_their_code(broker: Broker) -> None:
    async def refuse(params: dict[str, Any], actor: dict[str, Any]) -> None:
        raise RpcError("not_found", "conversation not found", status=404)

    async def crash(params: dict[str, Any], actor: dict[str, Any]) -> None:
        raise ValueError("secret internals")

    server = RpcServer(broker, "store", {"refuse": refuse, "crash": crash})
    client = RpcClient(broker, "store", timeout=5)
    await server.start()
    await client.start()
    with pytest.raises(RpcError) as refused:
        await client.call("refuse", {})
    assert (refused.value.code, refused.value.status) == ("not_found", 404)
    with pytest.raises(RpcError) as crashed:
        await client.call("crash", {})
    assert crashed.value.code == "internal"
    assert "secret" not in crashed.value.message
    with pytest.raises(RpcError) as unknown:
        await client.call("nope", {})
    assert unknown.value.code == "unknown_method"
    await client.stop()
    await server.stop()


async def test_call_without_a_server_times_out_with_a_clear_error(broker: Broker) -> None:
    client = RpcClient(broker, "store", timeout=0.3)
    await client.start()
    with pytest.raises(RpcTimeout) as timed_out:
        await client.call("message.send", {})
    assert timed_out.value.code == "unavailable"
    assert "no reply within" in timed_out.value.message
    await client.stop()


async def test_malformed_request_gets_an_error_reply_not_a_crash(broker: Broker) -> None:
    server = RpcServer(broker, "store", {})
    reply = await server.dispatch(b"{broken")
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    reply = await server.dispatch(b'{"method": "x", "params": []}')
    assert reply["error"]["code"] == "bad_request"


async def test_a_result_json_cannot_hold_becomes_an_internal_error_reply(broker: Broker) -> None:
    async def odd(params: dict[str, Any], actor: dict[str, Any]) -> object:
        return {"value": object()}

    server = RpcServer(broker, "store", {"odd": odd})
    client = RpcClient(broker, "store", timeout=5)
    await server.start()
    await client.start()
    with pytest.raises(RpcError) as failed:
        await client.call("odd", {})
    assert failed.value.code == "internal"
    await client.stop()
    await server.stop()


async def test_call_while_the_broker_is_unreachable_fails_fast_as_unavailable(amqp_url: str) -> None:
    from shared.messaging.topology import Topology
    from tests.support import infra
    from tests.support.proxy import CuttableProxy

    proxy = CuttableProxy(infra.AMQP_HOST, infra.AMQP_PORT)
    await proxy.start()
    broker = Broker(
        amqp_url.replace(f":{infra.AMQP_PORT}/", f":{proxy.port}/"), Topology(prefix="rpccut"), service="t"
    )
    await broker.start()
    client = RpcClient(broker, "store", timeout=30)
    await client.start()
    await proxy.cut()
    await asyncio.sleep(0.2)
    with pytest.raises(RpcError) as failed:
        await asyncio.wait_for(client.call("message.send", {}), 5)  # well before the 30 s timeout
    assert failed.value.code == "unavailable"
    await proxy.restore()
    await client.stop()
    await broker.close()
    await proxy.stop()
