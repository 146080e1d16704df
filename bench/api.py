"""Account and consultation setup through the public APIs (auth HTTP, gateway REST, the admin CLI).

Setup is not measured; it runs before any window opens.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx

from bench.model import Account, Conversation
from bench.stack import Stack

PASSWORD = "bench-password-123"
T = TypeVar("T")

# Gateway REST route that opens a consultation (docs/protocol.md); overridable for a renamed route.
OPEN_CONVERSATION_PATH = os.environ.get("BENCH_OPEN_CONVERSATION_PATH", "/api/conversations")


class SetupError(RuntimeError):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


async def retrying(fn: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Setup calls retried on server errors (a shared machine can run out of PostgreSQL connections)."""
    for attempt in range(attempts):
        try:
            return await fn()
        except (SetupError, httpx.TransportError) as exc:
            if attempt == attempts - 1 or (isinstance(exc, SetupError) and not exc.retryable):
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def bounded(items: Sequence[T], fn: Callable[[T], Awaitable[Any]], concurrency: int) -> list[Any]:
    """Run ``fn`` over ``items`` with at most ``concurrency`` in flight; results in input order."""
    sem = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        raise SetupError(
            f"{what}: HTTP {response.status_code} {response.text[:300]}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )
    data: dict[str, Any] = response.json()
    return data


class Api:
    """HTTP calls against one stack, with the allowed Origin on every request."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(
            headers={"Origin": stack.origin},
            timeout=60.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _post(self, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return _check(await self.http.post(url, **kwargs), what)

    async def register(self, username: str, email: str | None = None) -> Account:
        body: dict[str, Any] = {"username": username, "password": PASSWORD}
        if email:
            body["email"] = email
        data = await retrying(
            lambda: self._post(f"{self.stack.auth_url}/auth/register", "register", json=body)
        )
        return _account(data, email)

    async def login(self, username: str) -> Account:
        data = await retrying(
            lambda: self._post(
                f"{self.stack.auth_url}/auth/login", "login", json={"login": username, "password": PASSWORD}
            )
        )
        return _account(data, None)

    async def create_user(self, admin: Account, username: str, email: str) -> Account:
        """An account with a verified email, created by an administrator (it never logs in)."""
        data = await retrying(
            lambda: self._post(
                f"{self.stack.auth_url}/users",
                "create user",
                json={
                    "username": username,
                    "password": PASSWORD,
                    "email": email,
                    "role": "USER",
                    "email_verified": True,
                },
                headers={"Authorization": f"Bearer {admin.token}"},
            )
        )
        user = data.get("user", data)
        return Account(str(user["id"]), str(user["username"]), "USER", "", email)

    async def open_conversation(self, user: Account, subject: str) -> dict[str, Any]:
        data = await retrying(
            lambda: self._post(
                f"{self.stack.gateway_url}{OPEN_CONVERSATION_PATH}",
                "open conversation",
                json={"subject": subject},
                headers={"Authorization": f"Bearer {user.token}"},
            )
        )
        conv = data.get("conversation", data)
        assert isinstance(conv, dict)
        return conv


def _account(data: dict[str, Any], email: str | None) -> Account:
    user = data["user"]
    return Account(
        str(user["id"]), str(user["username"]), str(user["role"]), str(data["access_token"]), email
    )


async def ensure_admin(stack: Stack, username: str, email: str) -> None:
    """Create (or keep) an administrator with the auth CLI, as an operator would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auth.cli",
        "ensure-admin",
        "--username",
        username,
        "--password",
        PASSWORD,
        "--email",
        email,
        env={**os.environ, **stack.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SetupError(f"ensure-admin {username}: {out.decode(errors='replace')[-500:]}")


async def make_admins(api: Api, tag: str, count: int) -> list[Account]:
    names = [f"{tag}adm{i}" for i in range(count)]
    await bounded(names, lambda n: ensure_admin(api.stack, n, f"{n}@bench.localhost"), 4)
    accounts: list[Account] = await bounded(names, api.login, 8)
    for a in accounts:
        a.email = f"{a.username}@bench.localhost"
    return accounts


async def make_users(api: Api, tag: str, count: int, prefix: str = "u") -> list[Account]:
    names = [f"{tag}{prefix}{i}" for i in range(count)]
    result: list[Account] = await bounded(names, api.register, 16)
    return result


async def make_offline_users(api: Api, admin: Account, tag: str, count: int) -> list[Account]:
    """Users with a verified email (created by an administrator), logged in once to open a consultation."""
    names = [f"{tag}off{i}" for i in range(count)]

    async def one(name: str) -> Account:
        email = f"{name}@bench.localhost"
        await api.create_user(admin, name, email)
        account = await api.login(name)
        account.email = email
        return account

    result: list[Account] = await bounded(names, one, 16)
    return result


async def open_conversations(
    api: Api, users: Sequence[Account], admins: Sequence[Account], tag: str
) -> list[Conversation]:
    """One consultation per user; the store assigns the administrator."""
    by_id = {a.user_id: a for a in admins}

    async def one(user: Account) -> Conversation | None:
        conv = await api.open_conversation(user, f"bench {tag} {user.username}")
        admin = by_id.get(str(conv.get("admin_id")))
        if admin is None:
            return None
        return Conversation(str(conv["conversation_id"]), user, admin)

    found = await bounded(users, one, 16)
    return [c for c in found if c is not None]
