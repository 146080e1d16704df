"""The population a workload drives: accounts with tokens, and their consultations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Account:
    user_id: str
    username: str
    role: str  # USER | ADMIN
    token: str
    email: str | None = None


@dataclass(eq=False)
class Conversation:
    conversation_id: str
    user: Account
    admin: Account

    def other(self, account: Account) -> Account:
        return self.admin if account is self.user else self.user
