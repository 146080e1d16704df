"""Two store and two gateway processes on loopback, plus helpers to make users and conversations."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events import UserPayload, UserRegistered
from shared.messaging.connection import Broker
from shared.messaging.topology import Topology
from tests.support.processes import ServiceProcess, service
from tests.support.tokens import TestIssuer

PREFIX = "chate2e"
ORIGIN = "http://localhost:3000"


@dataclass
class Person:
    user_id: uuid.UUID
    role: str
    token: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Origin": ORIGIN}


@dataclass
class Stack:
    env: dict[str, str]
    issuer: TestIssuer
    engine: AsyncEngine
    broker: Broker
    stores: list[ServiceProcess] = field(default_factory=list)
    gateways: list[ServiceProcess] = field(default_factory=list)

    def gateway_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}

    async def start_gateway(self, **extra: str) -> ServiceProcess:
        proc = service("gateway", self.gateway_env(**extra))
        proc.start()
        await proc.wait_ready()
        return proc

    async def person(self, role: str = "USER", name: str | None = None) -> Person:
        """A user known to the store through a real ``user.registered`` event."""
        user_id = uuid.uuid4()
        display = name or f"{role.lower()}-{user_id.hex[:6]}"
        event = UserRegistered(
            payload=UserPayload(user_id=user_id, username=display, display_name=display, role=role)  # type: ignore[arg-type]
        )
        await self.broker.publisher.publish_event(event)
        for _ in range(200):
            async with self.engine.connect() as conn:
                found = (
                    await conn.execute(text("SELECT 1 FROM store.users WHERE user_id = :id"), {"id": user_id})
                ).first()
            if found:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("user.registered never reached the store")
        return Person(user_id, role, self.issuer.mint(user_id, role), display)

    async def open(self, user: Person, admin: Person, subject: str = "help", **body: Any) -> dict[str, Any]:
        """Open a consultation through gateway 1's REST API, then assign it to ``admin``."""
        gw = self.gateways[0].url
        async with httpx.AsyncClient(base_url=gw, timeout=10) as http:
            response = await http.post(
                "/api/conversations", json={"subject": subject, **body}, headers=user.headers
            )
            assert response.status_code == 201, response.text
            result: dict[str, Any] = response.json()
            cid = result["conversation"]["conversation_id"]
            if result["conversation"]["admin_id"] != str(admin.user_id):
                patched = await http.patch(
                    f"/api/conversations/{cid}", json={"admin_id": str(admin.user_id)}, headers=admin.headers
                )
                if patched.status_code == 404:  # assigned to another admin: that admin hands it over
                    owner = result["conversation"]["admin_id"]
                    token = self.issuer.mint(owner, "ADMIN")
                    patched = await http.patch(
                        f"/api/conversations/{cid}",
                        json={"admin_id": str(admin.user_id)},
                        headers={"Authorization": f"Bearer {token}", "Origin": ORIGIN},
                    )
                assert patched.status_code == 200, patched.text
        return result


def base_env(common_env: dict[str, str], jwks_url: str) -> dict[str, str]:
    return {
        **common_env,
        "CHAT_JWKS_URL": jwks_url,
        "CHAT_AMQP_PREFIX": PREFIX,
        "CHAT_OUTBOX_POLL_INTERVAL_S": "0.5",
        "CHAT_ALLOWED_ORIGINS": ORIGIN,
        "STORE_FLOOD_CAP_PER_MINUTE": "25",
        "GATEWAY_HEARTBEAT_S": "0.3",
        "GATEWAY_INSTANCE_TTL_S": "1.5",
        "GATEWAY_SWEEP_INTERVAL_S": "0.1",
        "GATEWAY_IDLE_AFTER_S": "1.5",
        "GATEWAY_REPLAY_MAX": "6",
        "STORE_DB_POOL_SIZE": "3",
        "GATEWAY_DB_POOL_SIZE": "2",
        "GATEWAY_RPC_SENDS_IN_FLIGHT": "1",  # concurrent sends travel as message.send_many
    }


def topology() -> Topology:
    return Topology(prefix=PREFIX)
