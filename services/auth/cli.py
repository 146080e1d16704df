"""``chat-admin`` / ``python -m services.auth.cli``: bootstrap administrators from the command line.

``ensure-admin`` is idempotent, so ``make run`` can call it on every start. It
needs only the database (``CHAT_DATABASE_URL``): ``user.registered`` goes to the
outbox and a running auth process publishes it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from services.auth.adapters import repository as repo
from services.auth.bootstrap import build_context
from services.auth.service_layer import accounts
from services.auth.service_layer.errors import AuthError, Conflict
from services.auth.settings import get_auth_settings
from shared.settings import get_common_settings


def generate_password() -> str:
    """A random password that passes the policy (about 120 bits)."""
    return secrets.token_urlsafe(20)


async def ensure_admin(username: str, password: str | None, email: str | None) -> tuple[bool, str | None]:
    """Create the ADMIN unless that username exists; returns (created, generated password or None)."""
    ctx = build_context(get_auth_settings(), get_common_settings(), pool_size=1)
    try:
        async with ctx.sessions() as session:
            existing = await repo.get_user_by_username(session, username)
        if existing is not None:
            return False, None
        generated = None if password else generate_password()
        try:
            async with ctx.unit_of_work() as session:
                await accounts.create_user(
                    ctx,
                    session,
                    username=username,
                    password=password or generated or "",
                    email=email,
                    role="ADMIN",
                    # The operator typed this address: the notifier may email the admin right away.
                    email_verified=True,
                )
        except Conflict as exc:
            if exc.field == "username":  # another process created it a moment ago
                return False, None
            raise
        return True, generated
    finally:
        await ctx.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chat-admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-admin", help="create the administrator if the username is free")
    ensure.add_argument("--username", required=True)
    ensure.add_argument("--password", help="generated and printed once when omitted")
    ensure.add_argument("--email")
    args = parser.parse_args(argv)

    if args.command == "ensure-admin":
        try:
            created, generated = asyncio.run(ensure_admin(args.username, args.password, args.email))
        except AuthError as exc:
            print(f"error: {exc.detail or exc.title}", file=sys.stderr)
            return 2
        if not created:
            print(f"admin {args.username!r} already exists")
        elif generated:
            print(f"created admin {args.username!r} with password: {generated}")
            print("this password is shown only once; store it now")
        else:
            print(f"created admin {args.username!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
