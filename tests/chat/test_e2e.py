"""End to end: two store and two gateway processes, real WebSockets and HTTP, real broker and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared.messaging.connection import Broker
from tests.chat.stack import ORIGIN, Stack, base_env, topology
from tests.chat.wsclient import Client
from tests.support.processes import service
from tests.support.tokens import TestIssuer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stack(common_env: dict[str, str], issuer: TestIssuer, engine: AsyncEngine) -> AsyncIterator[Stack]:
    env = base_env(common_env, issuer.jwks_url)
    broker = Broker(env["CHAT_AMQP_URL"], topology(), service="tests")
    await broker.start()
    s = Stack(env=env, issuer=issuer, engine=engine, broker=broker)
    s.stores = [service("store", {**env, "STORE_MAX_BATCH": "64"}), service("store#2", dict(env))]
    s.gateways = [service("gateway", dict(env)), service("gateway#2", dict(env))]
    procs = [*s.stores, *s.gateways]
    for proc in procs:
        proc.start()
    try:
        await asyncio.gather(*(proc.wait_ready() for proc in procs))
        yield s
    finally:
        for proc in procs:
            proc.stop()
        await broker.close()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateways[1].url, timeout=10) as client:
        yield client


def new(frames_of: Client, cid: str) -> list[int]:
    return [f["seq"] for f in frames_of.of_type("message.new", conversation_id=cid)]


async def send(client: Client, cid: str, body: str, client_id: str | None = None) -> dict[str, Any]:
    frame = {
        "type": "message.send",
        "conversation_id": cid,
        "client_id": client_id or uuid.uuid4().hex,
        "body": body,
    }
    return await client.request(frame)


async def test_live_delivery_reaches_both_participants_and_a_second_device(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    gw1, gw2 = stack.gateways[0].url, stack.gateways[1].url
    phone = await Client.open(gw1, user.token)
    laptop = await Client.open(gw2, user.token, how="subprotocol")
    desk = await Client.open(gw2, admin.token, how="cookie")
    try:
        ack = await send(phone, cid, "hello doctor")
        assert ack["type"] == "ack" and ack["seq"] == 1 and ack["duplicate"] is False
        for device in (desk, laptop, phone):
            got = await device.wait_for(lambda f: f["type"] == "message.new" and f["conversation_id"] == cid)
            assert got[0]["body"] == "hello doctor" and got[0]["message_id"] == ack["message_id"]
        reply = await send(desk, cid, "hello patient")
        for device in (phone, laptop):
            await device.wait_for(lambda f: f["type"] == "message.new" and f.get("seq") == reply["seq"])
    finally:
        for c in (phone, laptop, desk):
            await c.close()


async def test_order_is_preserved_under_concurrent_senders(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    a = await Client.open(stack.gateways[1].url, admin.token)
    try:
        sends = [send(u, cid, f"u{i}") for i in range(10)] + [send(a, cid, f"a{i}") for i in range(10)]
        acks = await asyncio.gather(*sends)
        assert sorted(ack["seq"] for ack in acks) == list(range(1, 21))
        for c in (u, a):
            await c.wait_for(lambda f: f["type"] == "message.new" and f["conversation_id"] == cid, count=20)
            assert new(c, cid) == list(range(1, 21))  # in order, once each
    finally:
        await u.close()
        await a.close()


async def test_many_devices_sending_at_once_share_rpc_batches_and_keep_order(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    gw = stack.gateways[0].url
    devices = [await Client.open(gw, (user if i % 2 else admin).token) for i in range(8)]
    watcher = await Client.open(stack.gateways[1].url, admin.token)
    try:
        acks = await asyncio.gather(
            *(send(d, cid, f"d{i}-{j}") for i, d in enumerate(devices) for j in range(2))
        )
        assert all(a["type"] == "ack" for a in acks), acks
        assert sorted(a["seq"] for a in acks) == list(range(1, 17))
        await watcher.wait_for(lambda f: f["type"] == "message.new" and f["conversation_id"] == cid, count=16)
        assert new(watcher, cid) == list(range(1, 17))
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{gw}/metrics")).text
        batched = [
            line for line in metrics.splitlines() if line.startswith("chat_gateway_send_batch_size_bucket")
        ]
        single = next(line for line in batched if 'le="1.0"' in line)
        total = next(line for line in batched if 'le="+Inf"' in line)
        assert float(single.split()[-1]) < float(total.split()[-1])  # some RPC calls carried several sends
        bad = await devices[0].request(
            {"type": "message.send", "conversation_id": str(uuid.uuid4()), "client_id": "z", "body": "x"}
        )
        assert bad["type"] == "error" and bad["code"] == "not_found"
    finally:
        for c in [*devices, watcher]:
            await c.close()


async def test_same_client_id_twice_stores_and_delivers_one_message(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    a = await Client.open(stack.gateways[1].url, admin.token)
    try:
        first = await send(u, cid, "only once", client_id="retry-1")
        second = await send(u, cid, "only once", client_id="retry-1")
        assert second["message_id"] == first["message_id"] and second["duplicate"] is True
        rest = await http.post(
            f"/api/conversations/{cid}/messages",
            json={"client_id": "retry-1", "body": "only once"},
            headers=user.headers,
        )
        assert rest.status_code == 200 and rest.json()["message"]["message_id"] == first["message_id"]
        marker = await send(u, cid, "marker")
        await a.wait_for(lambda f: f["type"] == "message.new" and f.get("seq") == marker["seq"])
        assert new(a, cid) == [1, 2]
        async with stack.engine.connect() as conn:
            count = (
                await conn.execute(
                    text("SELECT count(*) FROM store.messages WHERE conversation_id = :c"), {"c": cid}
                )
            ).scalar_one()
        assert count == 2
    finally:
        await u.close()
        await a.close()


async def test_forced_disconnect_resumes_with_no_gap_and_no_duplicate(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    a = await Client.open(stack.gateways[1].url, admin.token)
    try:
        for i in range(3):
            await send(u, cid, f"before {i}")
        await a.wait_for(lambda f: f["type"] == "message.new" and f.get("seq") == 3)
        a.abort()  # the network drops; the admin missed what follows
        for i in range(4):
            await send(u, cid, f"while away {i}")
        a = await Client.open(stack.gateways[0].url, admin.token, resume={cid: 3})
        await send(u, cid, "live again")
        await a.wait_for(lambda f: f["type"] == "message.new" and f.get("seq") == 8)
        assert new(a, cid) == [4, 5, 6, 7, 8]
        # A gap larger than the replay limit (6 here) is answered with an explicit reload.
        late = await Client.open(stack.gateways[1].url, admin.token, resume={cid: 0})
        assert late.of_type("reload", conversation_id=cid) and new(late, cid) == []
        await late.close()
    finally:
        await u.close()
        await a.close()


async def test_presence_flips_across_instances_and_expires_when_a_gateway_is_killed(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    await stack.open(user, admin)
    doomed = await stack.start_gateway(GATEWAY_IDLE_AFTER_S="60")
    a = await Client.open(stack.gateways[0].url, admin.token)
    try:
        u = await Client.open(doomed.url, user.token)
        uid = str(user.user_id)
        await a.wait_for(lambda f: f["type"] == "presence" and f["user_id"] == uid and f["state"] == "active")
        doomed.kill()  # no goodbye: only the time-to-live can take the user offline
        await a.wait_for(
            lambda f: f["type"] == "presence" and f["user_id"] == uid and f["state"] == "offline"
        )
        await u.close()
    finally:
        doomed.kill()
        await a.close()


async def test_idle_is_reported_after_the_idle_time_and_activity_makes_active(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    await stack.open(user, admin)
    a = await Client.open(stack.gateways[0].url, admin.token)
    u = await Client.open(stack.gateways[1].url, user.token)
    uid = str(user.user_id)
    try:
        await a.wait_for(lambda f: f["type"] == "presence" and f["user_id"] == uid and f["state"] == "idle")
        seen = len(a.of_type("presence", user_id=uid))
        await u.send({"type": "activity"})
        await a.wait_for(
            lambda f: f["type"] == "presence" and f["user_id"] == uid and f["state"] == "active", count=2
        )
        assert len(a.of_type("presence", user_id=uid)) > seen
    finally:
        await u.close()
        await a.close()


async def test_typing_reaches_the_other_side_and_is_not_stored(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    a = await Client.open(stack.gateways[1].url, admin.token)
    try:
        await u.send({"type": "typing", "conversation_id": cid})
        got = await a.wait_for(lambda f: f["type"] == "typing" and f["conversation_id"] == cid)
        assert got[0]["user_id"] == str(user.user_id) and got[0]["expires_in_ms"] > 0
        assert not u.of_type("typing")  # not echoed to the typist
        async with stack.engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT count(*) FROM store.messages WHERE conversation_id = :c"), {"c": cid}
                )
            ).scalar_one()
            outbox = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM store.outbox"
                        " WHERE position('typing' in encode(body, 'escape')) > 0"
                    )
                )
            ).scalar_one()
        assert stored == 0 and outbox == 0
    finally:
        await u.close()
        await a.close()


async def test_idor_attempts_fail_on_every_endpoint_and_frame(stack: Stack, http: httpx.AsyncClient) -> None:
    owner, admin, intruder = (
        await stack.person("USER"),
        await stack.person("ADMIN"),
        await stack.person("USER"),
    )
    opened = await stack.open(owner, admin, body="private words", client_id="idor")
    cid = opened["conversation"]["conversation_id"]
    mid = opened["message"]["message_id"]
    h = intruder.headers
    calls = [
        http.get(f"/api/conversations/{cid}", headers=h),
        http.patch(f"/api/conversations/{cid}", json={"subject": "mine"}, headers=h),
        http.get(f"/api/conversations/{cid}/messages", headers=h),
        http.post(f"/api/conversations/{cid}/messages", json={"client_id": "x", "body": "hi"}, headers=h),
        http.post(f"/api/conversations/{cid}/read", json={"seq": 1}, headers=h),
        http.patch(f"/api/messages/{mid}", json={"body": "edited"}, headers=h),
        http.delete(f"/api/messages/{mid}", headers=h),
    ]
    for response in await asyncio.gather(*calls):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found" and "private" not in response.text
    search = await http.get("/api/search", params={"q": "private"}, headers=h)
    assert search.status_code == 200 and search.json()["messages"] == []
    mine = await http.get("/api/conversations", headers=h)
    assert mine.json()["conversations"] == []
    inbox = await http.get("/api/admin/conversations", headers=h)
    assert inbox.status_code == 403
    x = await Client.open(stack.gateways[0].url, intruder.token, resume={cid: 0})
    try:
        assert x.of_type("error", code="not_found", conversation_id=cid) and not x.of_type("message.new")
        frames = [
            {"type": "message.send", "conversation_id": cid, "client_id": "x1", "body": "hi"},
            {"type": "read", "conversation_id": cid, "seq": 1},
            {"type": "typing", "conversation_id": cid},
            {"type": "message.edit", "message_id": mid, "body": "edited"},
            {"type": "message.delete", "message_id": mid},
        ]
        for frame in frames:
            answer = await x.request(frame)
            assert answer["type"] == "error" and answer["code"] == "not_found", answer
    finally:
        await x.close()


async def test_search_finds_a_message_by_a_word_in_it(stack: Stack, http: httpx.AsyncClient) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin, body="my xylophone is broken", client_id="s1"))["conversation"][
        "conversation_id"
    ]
    for who in (user, admin):
        found = await http.get("/api/search", params={"q": "xylophone"}, headers=who.headers)
        assert found.status_code == 200
        assert [m["conversation_id"] for m in found.json()["messages"]] == [cid]


async def test_flood_cap_answers_with_a_clear_error(stack: Stack, http: httpx.AsyncClient) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    try:
        answers = []
        for i in range(26):
            answers.append(await send(u, cid, f"spam {i}"))
        assert [a["type"] for a in answers[:25]] == ["ack"] * 25
        assert answers[25]["type"] == "error" and answers[25]["code"] == "flood_limited"
        rest = await http.post(
            f"/api/conversations/{cid}/messages", json={"client_id": "f", "body": "x"}, headers=user.headers
        )
        assert (
            rest.status_code == 429
            and rest.json()["code"] == "flood_limited"
            and "Retry-After" in rest.headers
        )
    finally:
        await u.close()


async def test_bad_frames_get_error_codes_and_the_socket_stays_usable(stack: Stack) -> None:
    user = await stack.person("USER")
    u = await Client.open(stack.gateways[0].url, user.token)
    try:
        cases = [
            ("{not json", "bad_json"),
            ('["a list"]', "bad_frame"),
            ('{"type": "launch.missiles"}', "unknown_type"),
            (
                '{"type": "message.send", "conversation_id": 42, "client_id": "c", "body": "x"}',
                "invalid_frame",
            ),
            (f'{{"type": "read", "conversation_id": "{uuid.uuid4()}", "seq": "many"}}', "invalid_frame"),
            ('{"type": "ping", "pad": "' + "x" * 20000 + '"}', "frame_too_large"),
        ]
        for raw, expected in cases:
            await u.send(raw)
            got = await u.wait_for(lambda f: f["type"] == "error" and f["code"] == expected)  # noqa: B023
            assert got
        assert (await u.request({"type": "ping"}))["type"] == "pong"
        huge = "x" * 70000  # above the protocol limit: closed with 1009, the process lives on
        await u.send(huge)
        closed = await asyncio.wait_for(u.closed, 10)
        assert closed[0] == 1009
        again = await Client.open(stack.gateways[0].url, user.token)
        await again.close()
    finally:
        await u.close()


async def test_handshake_checks_origin_and_token(stack: Stack) -> None:
    user = await stack.person("USER")
    gw = stack.gateways[0].url
    with pytest.raises(InvalidStatus) as foreign:
        await Client.open(gw, user.token, origin="https://evil.example")
    assert foreign.value.response.status_code == 403
    for token in (
        None,
        TestIssuer().mint(user.user_id, "USER"),
        stack.issuer.mint(user.user_id, "USER", ttl=-60),
    ):
        ws = await connect(
            gw.replace("http://", "ws://") + "/ws",
            origin=ORIGIN,  # type: ignore[arg-type]
            additional_headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4001
    async with httpx.AsyncClient(base_url=gw) as http:
        refused = await http.get(
            "/api/conversations", headers={**user.headers, "Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert (await http.get("/api/conversations", headers={"Origin": ORIGIN})).status_code == 401


async def test_token_refresh_in_band_keeps_the_socket_and_expiry_closes_it(stack: Stack) -> None:
    user = await stack.person("USER")
    gw = stack.gateways[1].url
    short = stack.issuer.mint(user.user_id, "USER", ttl=2)
    kept = await Client.open(gw, short)
    dropped = await Client.open(gw, short)
    try:
        fresh = stack.issuer.mint(user.user_id, "USER", ttl=600)
        await kept.send({"type": "auth.refresh", "token": fresh, "ref": "r"})
        refreshed = await kept.wait_for(lambda f: f["type"] == "auth.refreshed")
        assert refreshed[0]["ref"] == "r" and refreshed[0]["expires_at"] > 0
        other = stack.issuer.mint(uuid.uuid4(), "USER")
        await kept.send({"type": "auth.refresh", "token": other, "ref": "o"})
        await kept.wait_for(lambda f: f["type"] == "error" and f["code"] == "invalid_token")
        code, _ = await asyncio.wait_for(dropped.closed, 15)
        assert code == 4001
        assert (await kept.request({"type": "ping"}))["type"] == "pong"
    finally:
        await kept.close()
        await dropped.close()


async def test_rest_covers_history_read_receipts_edit_and_delete(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    user, admin = await stack.person("USER", "Alice"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin, body="first", client_id="r1"))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    try:
        for i in range(3):
            r = await http.post(
                f"/api/conversations/{cid}/messages",
                json={"client_id": f"m{i}", "body": f"n{i}"},
                headers=admin.headers,
            )
            assert r.status_code == 201
        page = (
            await http.get(f"/api/conversations/{cid}/messages", params={"limit": 2}, headers=user.headers)
        ).json()
        assert [m["seq"] for m in page["messages"]] == [3, 4] and page["has_more"]
        older = await http.get(
            f"/api/conversations/{cid}/messages", params={"before": 3}, headers=user.headers
        )
        assert [m["seq"] for m in older.json()["messages"]] == [1, 2]
        listing = (await http.get("/api/conversations", headers=user.headers)).json()["conversations"]
        assert listing[0]["conversation_id"] == cid and listing[0]["unread"] == 3
        read = await http.post(f"/api/conversations/{cid}/read", json={"seq": 4}, headers=user.headers)
        assert read.json() == {"conversation_id": cid, "read_seq": 4, "unread": 0}
        admin_ws = await Client.open(stack.gateways[1].url, admin.token)
        mid = page["messages"][0]["message_id"]
        edited = await http.patch(f"/api/messages/{mid}", json={"body": "fixed"}, headers=admin.headers)
        assert edited.status_code == 200 and edited.json()["message"]["edited_at"]
        got = await u.wait_for(lambda f: f["type"] == "message.updated" and f["message_id"] == mid)
        assert got[0]["body"] == "fixed"
        gone = await http.delete(f"/api/messages/{mid}", headers=admin.headers)
        assert gone.json()["message"]["deleted_at"] and gone.json()["message"]["body"] == ""
        await u.wait_for(
            lambda f: f["type"] == "message.updated" and f["message_id"] == mid and f["deleted_at"]
        )
        await u.request({"type": "read", "conversation_id": cid, "seq": 4})
        await admin_ws.close()
        status = await http.patch(
            f"/api/conversations/{cid}", json={"status": "PENDING"}, headers=admin.headers
        )
        assert status.json()["status"] == "PENDING"
        await u.wait_for(lambda f: f["type"] == "conversation.updated" and f["status"] == "PENDING")
        inbox = await http.get(
            "/api/admin/conversations", params={"status": "PENDING"}, headers=admin.headers
        )
        assert [c["conversation_id"] for c in inbox.json()["conversations"]] == [cid]
    finally:
        await u.close()


async def test_read_receipt_reaches_the_other_side_live(stack: Stack) -> None:
    user, admin = await stack.person("USER"), await stack.person("ADMIN")
    cid = (await stack.open(user, admin, body="see this", client_id="rr"))["conversation"]["conversation_id"]
    u = await Client.open(stack.gateways[0].url, user.token)
    a = await Client.open(stack.gateways[1].url, admin.token)
    try:
        ack = await a.request({"type": "read", "conversation_id": cid, "seq": 1})
        assert ack["type"] == "ack" and ack["read_seq"] == 1
        got = await u.wait_for(lambda f: f["type"] == "message.read" and f["conversation_id"] == cid)
        assert got[0]["reader_id"] == str(admin.user_id) and got[0]["seq"] == 1
    finally:
        await u.close()
        await a.close()


async def test_unread_event_carries_the_sender_name(stack: Stack) -> None:
    user, admin = await stack.person("USER", "Bob Sender"), await stack.person("ADMIN")
    channel = await stack.broker.consumer_channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(stack.broker.topology.events_exchange, routing_key="message.unread")
    try:
        cid = (await stack.open(user, admin, body="ping admin", client_id="un"))["conversation"][
            "conversation_id"
        ]
        import orjson

        async with queue.iterator(timeout=10) as it:
            async for message in it:
                event = orjson.loads(message.body)
                await message.ack()
                if event["payload"]["conversation_id"] == cid:
                    break
        assert event["payload"]["sender_name"] == "Bob Sender"
        assert event["payload"]["recipient_id"] == str(admin.user_id)
    finally:
        await channel.close()
