"""chat-client.js on its own, in Chromium: the socket's and the auth client's rules, without a server.

The module is served from its folder through Playwright's request routing (no
network); a scripted WebSocket and fetch stand in for the gateway and auth so
each rule — dedup, outbox re-send with the same client_id, resume positions,
backoff bounds, single-flight refresh — is checked directly. The same paths run
against the real services in test_chat_in_browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route

from services.gateway.web import WEB_DIR

ORIGIN = "http://client.test"

HARNESS = """
window.FakeWS = class FakeWS {
  static instances = [];
  constructor(url, protocols) {
    this.url = url; this.protocols = protocols; this.sent = []; this.readyState = 0;
    FakeWS.instances.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose && this.onclose({ code, reason }), 0);
  }
  accept() { this.readyState = 1; this.onopen && this.onopen(); }
  receive(frame) { this.onmessage && this.onmessage({ data: JSON.stringify(frame) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose && this.onclose({ code, reason: "" }); }
  static last() { return FakeWS.instances[FakeWS.instances.length - 1]; }
};
window.tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
window.until = async (predicate, ms = 3000) => {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await tick(5);
  }
};
window.fakeAuth = () => {
  const auth = new EventTarget();
  auth.refreshes = 0;
  auth.accessToken = async () => "token-1";
  auth.refresh = async () => { auth.refreshes += 1; return `token-${auth.refreshes + 1}`; };
  return auth;
};
"""


@pytest.fixture
async def module_page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()

    async def serve(route: Route) -> None:
        name = route.request.url.removeprefix(ORIGIN + "/")
        if name == "blank.html":
            await route.fulfill(body="<!doctype html><title>module</title>", content_type="text/html")
        elif name == "chat-client.js":
            body = (WEB_DIR / name).read_text(encoding="utf-8")
            await route.fulfill(body=body, content_type="text/javascript")
        else:
            await route.fulfill(status=404, body="")

    await context.route(f"{ORIGIN}/**", serve)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{ORIGIN}/blank.html")
    await page.evaluate(HARNESS)
    await page.evaluate("async () => { window.cc = await import('/chat-client.js'); }")
    yield page
    await context.close()
    assert not errors, errors


async def run(page: Page, body: str) -> Any:
    return await page.evaluate(f"async () => {{ {body} }}")


async def test_socket_sends_resume_positions_first_and_delivers_each_seq_once_in_order(
    module_page: Page,
) -> None:
    result = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({ url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS });
        const seen = [];
        socket.addEventListener("message", (e) => seen.push(e.detail.seq));
        socket.track("c1", 2);
        socket.connect();
        await until(() => FakeWS.last());
        const ws = FakeWS.last();
        ws.accept();
        for (const seq of [3, 3, 2, 4, 4]) {
          ws.receive({ type: "message.new", conversation_id: "c1", seq, body: "x" });
        }
        return { protocols: ws.protocols, first: ws.sent[0], seen };
        """,
    )
    assert result["protocols"] == ["chat.v1", "bearer.token-1"]
    assert result["first"] == {"type": "resume", "conversations": {"c1": 2}}
    assert result["seen"] == [3, 4]


async def test_unacked_message_is_resent_with_the_same_client_id_after_a_reconnect(module_page: Page) -> None:
    result = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({
          url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS, minBackoffMs: 5, maxBackoffMs: 20,
        });
        socket.connect();
        await until(() => FakeWS.last());
        const first = FakeWS.last();
        first.accept();
        first.receive({ type: "message.new", conversation_id: "c1", seq: 7, body: "old" });
        const acked = socket.send("c1", "hello", "cid-1");
        first.drop();
        await until(() => FakeWS.instances.length === 2);
        const second = FakeWS.last();
        second.accept();
        second.receive({ type: "ack", ref: "cid-1", client_id: "cid-1", conversation_id: "c1", seq: 8 });
        const message = await acked;
        return {
          firstSends: first.sent.filter((f) => f.type === "message.send").map((f) => f.client_id),
          secondFrames: second.sent.map((f) => f.type === "message.send" ? `send:${f.client_id}` : f.type),
          resume: second.sent[0].conversations,
          ackedSeq: message.seq,
          pending: socket.pendingMessages().length,
        };
        """,
    )
    assert result["firstSends"] == ["cid-1"]
    assert result["secondFrames"][:2] == ["resume", "send:cid-1"]
    assert result["resume"] == {"c1": 7}
    assert result["ackedSeq"] == 8
    assert result["pending"] == 0


async def test_reconnect_delays_grow_with_jitter_and_stay_under_the_cap(module_page: Page) -> None:
    delays = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({
          url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS, minBackoffMs: 4, maxBackoffMs: 40,
        });
        const delays = [];
        socket.addEventListener("state", (e) => {
          if (e.detail.state === "reconnecting" && e.detail.delayMs != null) delays.push(e.detail.delayMs);
        });
        socket.connect();
        for (let i = 1; i <= 8; i += 1) {
          await until(() => FakeWS.instances.length === i);
          FakeWS.last().drop();  // refused before it ever opened
        }
        socket.close();
        return delays;
        """,
    )
    assert len(delays) == 8
    assert all(2 <= d <= 40 + 2 for d in delays)
    # The cap doubles per attempt: the first try waits at most min/2 + min.
    assert delays[0] <= 2 + 4


async def test_expired_token_close_refreshes_before_reconnecting(module_page: Page) -> None:
    result = await run(
        module_page,
        """
        const auth = fakeAuth();
        auth.accessToken = async () => (auth.refreshes ? `token-${auth.refreshes + 1}` : "token-1");
        const socket = new cc.ChatSocket({ url: "ws://gw/ws", auth, WebSocketImpl: FakeWS, minBackoffMs: 5 });
        socket.connect();
        await until(() => FakeWS.last());
        FakeWS.last().accept();
        FakeWS.last().drop(4001);
        await until(() => FakeWS.instances.length === 2);
        return { refreshes: auth.refreshes, protocols: FakeWS.last().protocols };
        """,
    )
    assert result["refreshes"] == 1
    assert result["protocols"] == ["chat.v1", "bearer.token-2"]


async def test_a_hole_in_the_numbering_asks_for_the_gap_and_an_error_rejects_the_send(
    module_page: Page,
) -> None:
    result = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({ url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS });
        const gaps = [];
        socket.addEventListener("gap", (e) => gaps.push(e.detail));
        socket.track("c1", 3);
        socket.connect();
        await until(() => FakeWS.last());
        const ws = FakeWS.last();
        ws.accept();
        ws.receive({ type: "message.new", conversation_id: "c1", seq: 6, body: "x" });
        const failed = socket.send("c1", "too fast", "cid-9").catch((err) => err.code);
        ws.receive({ type: "error", code: "flood_limited", message: "slow down", ref: "cid-9" });
        return { gaps, failed: await failed, pending: socket.pendingMessages().length };
        """,
    )
    assert result["gaps"] == [{"conversation_id": "c1", "after": 3, "before": 6}]
    assert result["failed"] == "flood_limited"
    assert result["pending"] == 0


async def test_concurrent_refreshes_share_one_request_and_a_401_is_retried_once(module_page: Page) -> None:
    result = await run(
        module_page,
        """
        const calls = [];
        let access = 0;
        const fetchImpl = async (url, init) => {
          const path = new URL(url).pathname;
          calls.push(path);
          const json = (status, body) => new Response(JSON.stringify(body), {
            status, headers: { "Content-Type": "application/json" },
          });
          if (path === "/auth/login" || path === "/auth/refresh") {
            access += 1;
            await tick(20);
            return json(200, {
              user: { id: "u1" }, access_token: `a${access}`, refresh_token: `r${access}`, expires_in: 900,
            });
          }
          if (path === "/api/conversations") {
            const token = init.headers.Authorization;
            return token === "Bearer a1"
              ? json(401, { title: "Unauthorized", status: 401, code: "unauthorized" })
              : json(200, { conversations: [{ conversation_id: "c1" }] });
          }
          return json(404, { title: "Not found", status: 404 });
        };
        const auth = new cc.AuthClient({ baseUrl: "http://auth.test", fetch: fetchImpl });
        await auth.login("alice", "pw");
        await Promise.all([auth.refresh(), auth.refresh(), auth.refresh()]);
        const refreshesAfterBurst = calls.filter((p) => p === "/auth/refresh").length;
        const auth2 = new cc.AuthClient({ baseUrl: "http://auth.test", fetch: fetchImpl });
        access = 0;
        await auth2.login("alice", "pw");
        const api = new cc.ChatApi({ baseUrl: "http://gw.test", auth: auth2 });
        const list = await api.conversations();
        const ids = list.map((c) => c.conversation_id);
        return { refreshesAfterBurst, list: ids, token: auth2.session.access_token };
        """,
    )
    assert result["refreshesAfterBurst"] == 1
    assert result["list"] == ["c1"]
    assert result["token"] == "a2"


async def test_problem_json_becomes_a_sentence_naming_the_field_and_the_wait(module_page: Page) -> None:
    messages = await run(
        module_page,
        """
        const answer = (status, body, headers = {}) => async () => new Response(JSON.stringify(body), {
          status, headers: { "Content-Type": "application/problem+json", ...headers },
        });
        const out = [];
        for (const fetchImpl of [
          answer(422, {
            title: "Validation failed", status: 422, code: "validation_error",
            errors: [{ field: "password", message: "password must be at least 10 characters" }],
          }),
          answer(429, { title: "Too many requests", status: 429 }, { "Retry-After": "42" }),
          async () => { throw new TypeError("Failed to fetch"); },
        ]) {
          const auth = new cc.AuthClient({ baseUrl: "http://auth.test", fetch: fetchImpl });
          try {
            await auth.login("a", "b");
          } catch (err) {
            out.push([err.status, err.field, err.userMessage]);
          }
        }
        return out;
        """,
    )
    assert messages[0] == [422, "password", "Validation failed: password must be at least 10 characters"]
    assert messages[1][0] == 429 and "42 s" in messages[1][2]
    assert messages[2][0] == 0 and "http://auth.test" in messages[2][2]


async def test_a_silent_connection_is_pinged_then_replaced_and_the_unacked_send_moves_along(
    module_page: Page,
) -> None:
    result = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({
          url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS,
          minBackoffMs: 5, pingIntervalMs: 60, ackTimeoutMs: 150,
        });
        socket.connect();
        await until(() => FakeWS.last());
        const first = FakeWS.last();
        first.accept();
        socket.send("c1", "hello", "cid-1");
        // Nothing ever comes back: a ping goes out, then the socket is given up and replaced.
        await until(() => FakeWS.instances.length === 2, 5000);
        const second = FakeWS.last();
        second.accept();
        return {
          firstSent: first.sent.map((f) => f.type),
          secondSent: second.sent.map((f) => f.type === "message.send" ? `send:${f.client_id}` : f.type),
        };
        """,
    )
    assert "ping" in result["firstSent"]
    assert result["secondSent"][:2] == ["resume", "send:cid-1"]


async def test_an_overdue_ack_repeats_the_send_on_a_live_connection(module_page: Page) -> None:
    sends = await run(
        module_page,
        """
        const socket = new cc.ChatSocket({
          url: "ws://gw/ws", auth: fakeAuth(), WebSocketImpl: FakeWS, pingIntervalMs: 40, ackTimeoutMs: 120,
        });
        socket.connect();
        await until(() => FakeWS.last());
        const ws = FakeWS.last();
        // A live server: every ping is answered, but this send's ack got lost.
        const send = ws.send.bind(ws);
        ws.send = (data) => {
          send(data);
          if (JSON.parse(data).type === "ping") setTimeout(() => ws.receive({ type: "pong" }), 0);
        };
        ws.accept();
        socket.send("c1", "hello", "cid-1").catch(() => {});  // rejected by close() below
        const count = () => ws.sent.filter((f) => f.client_id === "cid-1").length;
        await until(() => count() >= 2, 5000);
        socket.close();
        return { sends: count(), sockets: FakeWS.instances.length };
        """,
    )
    assert sends["sends"] >= 2
    assert sends["sockets"] == 1
